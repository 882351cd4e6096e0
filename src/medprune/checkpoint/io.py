"""Checkpoints without pickle: weights in ``<stem>.safetensors``, everything else in a ``<stem>.json`` sidecar.

Loading rebuilds the architecture from the sidecar with :func:`medprune.models.create_model`, shrinks it to the saved
pruned shapes when the sidecar says it was pruned, checks the weights file's SHA-256 and loads the state dict
strictly. Nothing is ever unpickled: ``.pt``/``.pth``/``.pkl`` files are refused.

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
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medprune.models import create_model
from medprune.provenance import file_sha256, model_checksum, package_versions, to_jsonable
from medprune.pruning.physical import apply_structure

logger = logging.getLogger(__name__)

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "read_meta",
    "checkpoint_paths",
    "FORMAT",
]

#: Sidecar format tag; bump when the layout changes incompatibly.
FORMAT = "medprune-checkpoint/1"
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
_REQUIRED = ("format", "model", "weights_file", "weights_sha256", "class_names", "image_size", "in_channels")
_MODEL_KEYS = ("name", "num_classes", "in_channels", "image_size")


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
            "medprune checkpoints are <stem>.safetensors + <stem>.json (see medprune.checkpoint.save_checkpoint)"
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

    Returns:
        The path of the weights file.
    """
    weights_path, sidecar_path = checkpoint_paths(path)
    spec = getattr(model, "medprune_spec", None)
    if not isinstance(spec, dict) or any(key not in spec for key in _MODEL_KEYS):
        raise ValueError("model has no medprune_spec; build it with medprune.models.create_model to save it")
    meta = dict(meta or {})
    reserved = sorted(set(meta) & {"format", "model", "weights_file", "weights_sha256", "versions", "created"})
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
    save_file(state, str(weights_path), metadata={"format": FORMAT})
    sidecar = {
        "format": FORMAT,
        "model": {key: spec[key] for key in _MODEL_KEYS},
        "class_names": class_names,
        "image_size": int(meta.pop("image_size", spec["image_size"])),
        "in_channels": int(meta.pop("in_channels", spec["in_channels"])),
        **meta,
        "weights_file": weights_path.name,
        "weights_sha256": file_sha256(weights_path),
        "model_checksum": model_checksum(model),
        "versions": package_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    sidecar_path.write_text(json.dumps(to_jsonable(sidecar), indent=2, allow_nan=False) + "\n")
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
    try:
        state = load_file(str(weights_path))
    except SafetensorError as error:
        raise ValueError(f"{weights_path}: not a readable safetensors file ({error})") from error
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{weights_path}: weights do not fit {meta['model']['name']!r}: {error}") from error
    model.medprune_meta = meta  # type: ignore[assignment]
    return model.to(device).eval(), meta
