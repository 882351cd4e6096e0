"""Checkpoints without pickle: weights in ``<stem>.safetensors``, everything else in a ``<stem>.json`` sidecar.

Loading rebuilds the architecture from the sidecar with :func:`medprune.models.create_model`, shrinks it to the saved
pruned shapes when the sidecar says it was pruned, folds its BatchNorms into their convolutions when the sidecar lists
``folded_batchnorms`` (a model saved after :func:`medprune.pruning.fold_batchnorms`), checks the weights file's
SHA-256 and loads the state dict strictly. Nothing is ever unpickled: ``.pt``/``.pth``/``.pkl`` files are refused.

>>> from medprune.models import create_model
>>> import tempfile, pathlib
>>> model = create_model("resnet_small", num_classes=2, image_size=28)
>>> path = save_checkpoint(pathlib.Path(tempfile.mkdtemp()) / "model", model, {"class_names": ["a", "b"]})
>>> loaded, meta = load_checkpoint(path)
>>> meta["model"]["name"], model_checksum(loaded) == model_checksum(model)
('resnet_small', True)
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medprune.models import create_model
from medprune.provenance import file_sha256, model_checksum, package_versions, to_jsonable
from medprune.pruning.folding import fold_batchnorms
from medprune.pruning.physical import apply_structure
from medprune.rundir import atomic_path, atomic_writer
from medprune.training.memory import check_batch_memory

logger = logging.getLogger(__name__)

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "read_meta",
    "checkpoint_paths",
    "check_tensors",
    "read_safetensors_header",
    "FORMAT",
    "HALF_DTYPES",
]

#: Sidecar format tag; bump when the layout changes incompatibly.
FORMAT = "medprune-checkpoint/1"
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
_REQUIRED = ("format", "model", "weights_file", "weights_sha256", "class_names", "image_size", "in_channels")
_MODEL_KEYS = ("name", "num_classes", "in_channels", "image_size")
#: Bytes per element of each safetensors dtype.
SAFETENSORS_DTYPES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip
_TORCH_TO_SAFETENSORS = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
_TORCH_TO_SAFETENSORS.update({torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"})
#: Half-precision storage a sidecar may declare with ``weights_dtype`` (floating tensors stored in it, loaded as
#: float32); without it every floating tensor must be stored as the architecture holds it (float32).
HALF_DTYPES: dict[str, str] = {"float16": "F16", "bfloat16": "BF16"}
_MAX_HEADER = 100 * 1024 * 1024


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(weights, sidecar)`` paths for ``path`` given with or without ``.safetensors``/``.json``.

    Raises:
        ValueError: for pickle-based formats (``.pt``, ``.pth``, ``.pkl``, ...), which medprune never loads.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _PICKLE_SUFFIXES:
        raise ValueError(
            f"{path}: refusing a pickle-based checkpoint ({suffix}); loading pickles can execute arbitrary code. "
            "medprune checkpoints are <stem>.safetensors + <stem>.json, written by medprune train; convert a PyTorch "
            "state dict with medprune import --arch ARCH --weights FILE --num-classes N"
        )
    stem = path.with_suffix("") if suffix in (".safetensors", ".json") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any] | None = None) -> Path:
    """Write ``<stem>.safetensors`` (weights) and ``<stem>.json`` (everything needed to rebuild and audit).

    Args:
        path: ``<stem>``, ``<stem>.safetensors`` or ``<stem>.json``; parent folders are created.
        model: a model built by :func:`medprune.models.create_model` (it carries ``medprune_spec``).
        meta: extra sidecar fields, stored as given (JSON-converted). Recognised keys: ``class_names`` (default
            ``"0"``…), ``normalization`` (``{"mean": [...], "std": [...]}``), ``train_config``, ``dataset``
            (name, fingerprint), ``metrics``, ``pruned`` (the structure ``apply_structure`` restores).
            ``folded_batchnorms`` is set here, from ``model.medprune_folded`` (the BatchNorm paths
            :func:`medprune.pruning.fold_batchnorms` folded; absent when none were).

    Returns:
        The path of the weights file.
    """
    weights_path, sidecar_path = checkpoint_paths(path)
    spec = getattr(model, "medprune_spec", None)
    if not isinstance(spec, dict) or any(key not in spec for key in _MODEL_KEYS):
        raise ValueError("model has no medprune_spec; build it with medprune.models.create_model to save it")
    meta = dict(meta or {})
    own = {"format", "model", "weights_file", "weights_sha256", "versions", "created", "folded_batchnorms"}
    reserved = sorted(set(meta) & own)
    if reserved:
        raise ValueError(f"meta keys {reserved} are set by save_checkpoint itself; remove them")
    class_names = [str(c) for c in meta.pop("class_names", range(spec["num_classes"]))]
    if len(class_names) != spec["num_classes"]:
        raise ValueError(f"class_names has {len(class_names)} entries but the model has {spec['num_classes']} outputs")

    state = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        key = tensor.untyped_storage().data_ptr()
        state[name] = tensor.clone() if key in seen else tensor  # safetensors refuses shared storage
        seen.add(key)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights_path) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    sidecar = {
        "format": FORMAT,
        "model": {key: spec[key] for key in _MODEL_KEYS},
        "class_names": class_names,
        "image_size": int(meta.pop("image_size", spec["image_size"])),
        "in_channels": int(meta.pop("in_channels", spec["in_channels"])),
        **meta,
        **({"folded_batchnorms": list(folded)} if (folded := getattr(model, "medprune_folded", None)) else {}),
        "weights_file": weights_path.name,
        "weights_sha256": file_sha256(weights_path),
        "model_checksum": model_checksum(model),
        "versions": package_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_writer(sidecar_path, durable=True) as handle:
        handle.write(json.dumps(to_jsonable(sidecar), indent=2, allow_nan=False) + "\n")
    logger.debug("saved checkpoint %s (+ %s)", weights_path, sidecar_path.name)
    return weights_path


def read_meta(path: str | Path) -> dict[str, Any]:
    """The validated sidecar of a checkpoint (no weights are read).

    Raises:
        FileNotFoundError: the sidecar is missing.
        ValueError: pickle formats, invalid JSON or missing fields (the message names the file).
    """
    _, sidecar_path = checkpoint_paths(path)
    if not sidecar_path.is_file():
        raise FileNotFoundError(f"checkpoint sidecar {sidecar_path} does not exist")
    try:
        meta = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{sidecar_path}: not UTF-8 text (byte {error.start}); a sidecar is a JSON file") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{sidecar_path}: not valid JSON ({error})") from error
    if not isinstance(meta, dict):
        raise ValueError(f"{sidecar_path}: expected a JSON object, got {type(meta).__name__}")
    missing = [key for key in _REQUIRED if key not in meta]
    if missing:
        raise ValueError(f"{sidecar_path}: missing checkpoint field(s) {missing}; required: {', '.join(_REQUIRED)}")
    if meta["format"] != FORMAT:
        raise ValueError(f"{sidecar_path}: unsupported format {meta['format']!r}; this medprune reads {FORMAT!r}")
    if not isinstance(meta["model"], dict):
        raise ValueError(f"{sidecar_path}: 'model' must be an object with keys {', '.join(_MODEL_KEYS)}")
    model_missing = [key for key in _MODEL_KEYS if key not in meta["model"]]
    if model_missing:
        raise ValueError(f"{sidecar_path}: 'model' lacks {model_missing}; required: {', '.join(_MODEL_KEYS)}")
    model_extra = sorted(set(meta["model"]) - set(_MODEL_KEYS))
    if model_extra:
        raise ValueError(
            f"{sidecar_path}: unknown key(s) {model_extra} under 'model'; allowed: {', '.join(_MODEL_KEYS)}"
        )
    _check_field_types(meta, sidecar_path)
    return meta


def _check_field_types(meta: dict[str, Any], sidecar_path: Path) -> None:
    """Types of the fields loading relies on; ``weights_file`` must be a plain file name beside the sidecar."""
    weights_file = meta["weights_file"]
    if not isinstance(weights_file, str) or not weights_file or Path(weights_file).name != weights_file:
        raise ValueError(
            f"{sidecar_path}: weights_file must be a file name beside the sidecar (no folders), got {weights_file!r}"
        )
    if not isinstance(meta["weights_sha256"], str):
        raise ValueError(f"{sidecar_path}: weights_sha256 must be a hex string, got {meta['weights_sha256']!r}")
    if not isinstance(meta["model"]["name"], str):
        raise ValueError(f"{sidecar_path}: model.name must be a string, got {meta['model']['name']!r}")
    sizes = {f"model.{key}": meta["model"][key] for key in _MODEL_KEYS[1:]}
    sizes.update(image_size=meta["image_size"], in_channels=meta["in_channels"])
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{sidecar_path}: {key} must be a positive integer, got {value!r}")
    half = meta.get("weights_dtype", "float32")
    if half != "float32" and half not in HALF_DTYPES:
        raise ValueError(f"{sidecar_path}: weights_dtype must be float32, float16 or bfloat16, got {half!r}")
    folded = meta.get("folded_batchnorms", [])
    if not isinstance(folded, list) or not all(isinstance(path, str) and path for path in folded):
        raise ValueError(
            f"{sidecar_path}: folded_batchnorms must be a list of BatchNorm paths (names of modules), got {folded!r}"
        )
    names = meta["class_names"]
    if not isinstance(names, list) or len(names) != meta["model"]["num_classes"]:
        raise ValueError(
            f"{sidecar_path}: class_names must be a list of {meta['model']['num_classes']} names (model.num_classes), "
            f"got {names!r}"
        )


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_checkpoint` and load its weights (never unpickles).

    Args:
        path: ``<stem>``, ``<stem>.safetensors`` or ``<stem>.json``.
        device: where to put the model.

    Returns:
        ``(model, meta)``: the model in eval mode (with ``medprune_spec``) and the sidecar dict.

    Raises:
        ValueError: pickle formats, missing/invalid sidecar fields, a weights file whose SHA-256 differs from the
            sidecar's, or weights that do not fit the architecture (each message names the file).
    """
    weights_path, sidecar_path = checkpoint_paths(path)
    meta = read_meta(sidecar_path)
    weights_path = sidecar_path.with_name(meta["weights_file"])
    if not weights_path.is_file():
        raise FileNotFoundError(f"weights file {weights_path} (named in {sidecar_path.name}) does not exist")
    digest = file_sha256(weights_path)
    if digest != meta["weights_sha256"]:
        raise ValueError(
            f"{weights_path}: SHA-256 {digest[:12]}… differs from {meta['weights_sha256'][:12]}… recorded in "
            f"{sidecar_path.name}; the weights were changed or belong to another checkpoint"
        )
    sizes = {key: meta["model"][key] for key in ("num_classes", "image_size", "in_channels")}
    check_batch_memory(meta["model"]["name"], **sizes, what=str(sidecar_path))  # before allocating the model
    try:
        model = create_model(**meta["model"])
    except (ValueError, KeyError) as error:
        raise ValueError(f"{sidecar_path}: cannot build the model it describes: {error}") from None
    if meta.get("pruned"):
        try:
            shrunk = apply_structure(model, meta["pruned"])
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError) as error:
            raise ValueError(
                f"{sidecar_path}: 'pruned' does not fit the model ({type(error).__name__}: {error})"
            ) from None
        if shrunk is not None and shrunk is not model:
            shrunk.medprune_spec = getattr(shrunk, "medprune_spec", model.medprune_spec)  # type: ignore[assignment]
            model = shrunk
    if meta.get("folded_batchnorms"):
        model = _fold_as_saved(model, meta["folded_batchnorms"], sidecar_path)
    header = read_safetensors_header(weights_path)
    check_tensors(header, model.state_dict(), weights_path, meta)
    try:
        state = load_file(str(weights_path))
    except SafetensorError as error:
        raise ValueError(f"{weights_path}: not a readable safetensors file ({error})") from error
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"{weights_path}: tensor {name!r} holds {bad} NaN or infinite value(s) of {tensor.numel()}; "
                "a model with non-finite weights cannot be evaluated or pruned"
            )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{weights_path}: weights do not fit {meta['model']['name']!r}: {error}") from error
    model.medprune_meta = meta  # type: ignore[assignment]
    return model.to(device).eval(), meta


def _fold_as_saved(model: nn.Module, saved: list[str], sidecar_path: Path) -> nn.Module:
    """``model`` with its BatchNorms folded as the saved model's were (the architecture its weights fit)."""
    folded = fold_batchnorms(model)
    if list(folded.medprune_folded) != list(saved):
        missing = sorted(set(saved) - set(folded.medprune_folded))
        extra = sorted(set(folded.medprune_folded) - set(saved))
        raise ValueError(
            f"{sidecar_path}: folded_batchnorms lists {len(saved)} BatchNorm(s) but folding the model it describes "
            f"folds {len(folded.medprune_folded)} (not folded here: {missing[:3]}; folded but not listed: "
            f"{extra[:3]}); the sidecar belongs to another architecture or medprune version"
        )
    return folded


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the header names tensor {key!r} twice")
        seen[key] = value
    return seen


def read_safetensors_header(path: str | Path) -> dict[str, dict[str, Any]]:
    """The header of a ``.safetensors`` file, checked by hand before any tensor is read: its length fits the file,
    it is one JSON object without repeated keys, and every entry has a known dtype, a shape of non-negative integers
    and data offsets inside the file whose length is exactly ``prod(shape) * itemsize``.

    Returns:
        ``{tensor name: {"dtype", "shape", "data_offsets"}}`` (``__metadata__`` left out).

    Raises:
        ValueError: naming the file, the tensor and what was wrong.
    """
    path = Path(path)
    bad = f"{path}: not a readable safetensors file"
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length <= 1 or length > _MAX_HEADER or 8 + length > size:
            raise ValueError(f"{bad} (header length {length} for a file of {size} bytes)")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise ValueError(f"{bad}: the header is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{bad}: the header is not valid JSON ({error.msg})") from None
    except ValueError as error:
        raise ValueError(f"{bad}: {error}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{bad}: the header is not a JSON object")
    data_size = size - 8 - length
    entries: dict[str, dict[str, Any]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        where = f"{bad}: tensor {name!r}"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{where}: header entry must hold exactly dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"{where}: unknown dtype {dtype!r}; known: {', '.join(SAFETENSORS_DTYPES)}")
        if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
            raise ValueError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or any(isinstance(o, bool) or not isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            raise ValueError(f"{where}: data_offsets {offsets!r} do not lie inside the {data_size} data bytes")
        needed = math.prod(shape) * SAFETENSORS_DTYPES[dtype]
        if offsets[1] - offsets[0] != needed:
            raise ValueError(
                f"{where}: {offsets[1] - offsets[0]} data bytes but dtype {dtype} and shape {shape} need {needed}"
            )
        entries[name] = entry
    return entries


def check_tensors(
    header: Mapping[str, Mapping[str, Any]],
    expected: Mapping[str, torch.Tensor],
    path: str | Path,
    meta: Mapping[str, Any],
) -> None:
    """Every tensor of a weights file against the architecture its sidecar names: the same names (none missing, none
    extra), the same shapes, and dtypes: a floating tensor stored as float32 (or as the sidecar's ``weights_dtype``,
    float16 / bfloat16), an integer buffer as the architecture holds it.

    Raises:
        ValueError: one line naming the tensor, what the file holds and what the architecture expects.
    """
    arch = meta["model"]["name"] if isinstance(meta.get("model"), Mapping) else "the model"
    path = f"{path}: weights do not fit {arch!r}:"
    missing = [name for name in expected if name not in header]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"{path} tensor {missing[0]!r}{more} that {arch!r} needs is missing")
    extra = [name for name in header if name not in expected]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise ValueError(f"{path} tensor {extra[0]!r}{more} is not part of {arch!r}")
    half = HALF_DTYPES.get(str(meta.get("weights_dtype", "float32")))
    for name, tensor in expected.items():
        entry = header[name]
        if list(entry["shape"]) != list(tensor.shape):
            raise ValueError(
                f"{path} tensor {name!r} has shape {entry['shape']} but {arch!r} needs {list(tensor.shape)}"
            )
        wanted = _TORCH_TO_SAFETENSORS.get(tensor.dtype, str(tensor.dtype))
        allowed = {wanted, half} if tensor.is_floating_point() and half else {wanted}
        if entry["dtype"] not in allowed:
            kind = "floating point" if tensor.is_floating_point() else "integer"
            hint = "; float16 / bfloat16 only where the sidecar sets weights_dtype" if kind != "integer" else ""
            needs = " or ".join(sorted(allowed))
            raise ValueError(
                f"{path} tensor {name!r} is stored as {entry['dtype']} but {arch!r} needs {needs} ({kind}{hint})"
            )
