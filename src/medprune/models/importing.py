"""Import a trained torchvision / timm classifier as a medprune checkpoint: :func:`import_model`.

The weights file is read without running pickle code: ``.safetensors`` directly, ``.pt``/``.pth``/``.bin`` with
``torch.load(..., weights_only=True)``, which only rebuilds tensors and plain containers. A file that needs full
unpickling (a whole pickled ``nn.Module``, any other object, a ``__reduce__`` payload) is refused with the name of the
object it would have had to import; nothing in it runs. Common wrappers are unwrapped and said so in the log: a
``state_dict`` / ``model_state_dict`` / ``model`` / ``module`` / ``net`` key, and the ``module.`` (DataParallel) and
``_orig_mod.`` (``torch.compile``) key prefixes.

The architecture is rebuilt with random weights by :func:`medprune.models.create_model` (``torchvision:<name>`` or
``timm:<name>``) with the requested number of classes (so the classifier head has that shape before loading), and the
weights are loaded strictly: missing, unexpected and wrong-shape keys are reported by name, nothing is loaded
partially. Grey-scale data with a model whose first conv takes 3 channels is recorded as an *input adapter* in the
sidecar: the data pipeline (``load_dataset(..., channels=3)``, used by every command) repeats the grey image to 3
channels before normalising each with the ImageNet mean / std, the torchvision / timm convention recorded in the
sidecar's ``normalization``; models trained with other statistics need their inputs prepared accordingly.

>>> import tempfile, pathlib, torchvision, torch
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), folder / "resnet.pt")
>>> result = import_model("resnet18", folder / "resnet.pt", 2, image_size=32, out_dir=folder / "imported")
>>> result.arch, result.weights.name
('torchvision:resnet18', 'model.safetensors')
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from medprune.checkpoint import load_checkpoint, save_checkpoint
from medprune.data import GREY_MEAN, GREY_STD, IMAGENET_MEAN, IMAGENET_STD, DatasetNotFoundError, load_dataset
from medprune.models import create_model
from medprune.models.external import EXTERNAL_SOURCES
from medprune.models.units import classifier_name
from medprune.provenance import model_checksum

logger = logging.getLogger(__name__)

__all__ = [
    "WEIGHT_SUFFIXES",
    "ImportResult",
    "WeightsError",
    "canonical_arch",
    "class_names_from_dataset",
    "dataset_class_names",
    "import_model",
    "read_class_names",
    "read_state_dict",
]

#: Weight file suffixes :func:`read_state_dict` reads.
WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".pt", ".pth", ".bin")
#: Keys under which training scripts commonly nest the state dict (tried in this order).
WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "module", "net")
#: Key prefixes added by wrappers: DataParallel / DistributedDataParallel, ``torch.compile``.
WRAPPER_PREFIXES: dict[str, str] = {"module.": "DataParallel/DistributedDataParallel", "_orig_mod.": "torch.compile"}
_LISTED = 4  # keys named per kind of mismatch in messages


class WeightsError(ValueError):
    """A weights file that cannot be imported; the message names the file and the key, value or object at fault."""


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_model` wrote.

    Attributes:
        weights: the checkpoint's ``model.safetensors`` (pass it to ``evaluate``, ``score``, ``prune``, ``sweep``).
        sidecar: its ``model.json``.
        arch: the architecture as recorded (``torchvision:<name>`` or ``timm:<name>``).
        num_classes: outputs of the model.
        in_channels: channels the model takes (3 when grey data goes through the input adapter).
        image_size: input side recorded for the data pipeline.
        input_adapter: ``{"kind": "repeat_channels", "from": 1, "to": 3}`` or ``None``.
        notes: what was done to the file's contents (unwrapping, prefixes), as logged.
    """

    weights: Path
    sidecar: Path
    arch: str
    num_classes: int
    in_channels: int
    image_size: int
    input_adapter: dict[str, Any] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def canonical_arch(arch: str) -> str:
    """``resnet18`` -> ``torchvision:resnet18``; ``timm:...`` and ``torchvision:...`` are kept; other prefixes raise."""
    source, sep, name = arch.partition(":")
    if not sep:
        return f"torchvision:{arch}"
    if source not in EXTERNAL_SOURCES or not name:
        raise WeightsError(f"arch {arch!r}: expected '<torchvision model>', 'torchvision:<name>' or 'timm:<name>'")
    return arch


# ------------------------------------------------------------------------------------------------- reading weights


def _refusal(path: Path, error: Exception) -> WeightsError:
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    what = (
        f"it pickles {found.group(1)!r}, which only full unpickling can rebuild (a whole nn.Module, any object)"
        if found
        else "it holds objects other than tensors and plain containers"
    )
    return WeightsError(
        f"{path}: refusing to unpickle: {what}, and loading it would have to run code from the file (any pickled "
        "object can execute arbitrary code). Save the weights only: torch.save(model.state_dict(), path) or "
        "safetensors.torch.save_file(model.state_dict(), path)"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_raw(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise WeightsError(
            f"{path}: unsupported weights format {suffix or '(none)'!r}; use {', '.join(WEIGHT_SUFFIXES)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if suffix == ".safetensors":
        try:
            return load_file(str(path))
        except SafetensorError as error:
            raise WeightsError(f"{path}: not a readable safetensors file ({error})") from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise _refusal(path, error) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise WeightsError(f"{path}: not a readable torch weights file ({str(error).splitlines()[0]})") from error


def _is_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], list[str]]:
    """Read a state dict without running pickle code, unwrapping common containers and key prefixes.

    Args:
        path: ``.safetensors``, or ``.pt``/``.pth``/``.bin`` written by ``torch.save`` (read with ``weights_only``).

    Returns:
        ``(state_dict, notes)``: the tensors by key and one note per unwrapping step (also logged).

    Raises:
        WeightsError: unsupported suffix, unreadable file, a file that needs full unpickling (the message names the
            pickled object), or contents that are not a state dict (names the key and the type found).
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    obj = _load_raw(path)
    notes: list[str] = []
    trail = ""
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if wrapper is None:
            bad = next(((k, v) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)), None)
            detail = f"key {trail}{bad[0]!r} holds a {type(bad[1]).__name__}" if bad else "it is empty"
            raise WeightsError(
                f"{path}: not a state dict ({detail}); expected {{name: tensor}}, possibly under one of the keys "
                f"{', '.join(WRAPPER_KEYS)}"
            )
        others = sorted(str(k) for k in obj if k != wrapper)
        notes.append(f"took the state dict under key {trail}{wrapper!r}" + (f" (ignored: {others})" if others else ""))
        trail += f"{wrapper!r} > "
        obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict ({{name: tensor}})")
    state = dict(obj)
    stripped = True
    while stripped:
        stripped = False
        for prefix, origin in WRAPPER_PREFIXES.items():
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                notes.append(f"stripped the {prefix!r} prefix ({origin}) from {len(state)} keys")
                stripped = True
    for note in notes:
        logger.info("%s: %s", path.name, note)
    return state, notes


# ---------------------------------------------------------------------------------------------------- key checking


def _first_conv_key(model: nn.Module) -> str | None:
    return next((f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f", … ({len(items) - _LISTED} more)" if len(items) > _LISTED else "")


def check_keys(model: nn.Module, state: Mapping[str, Tensor], path: Path, arch: str) -> dict[str, Tensor]:
    """The state dict to load strictly, or a :class:`WeightsError` naming every kind of mismatch.

    BatchNorm ``num_batches_tracked`` counters missing from the file are filled with the model's (they do not change
    the outputs); every other missing, unexpected or wrong-shape key is an error.
    """
    expected = model.state_dict()
    state = dict(state)
    for key in [k for k in expected if k not in state and k.endswith("num_batches_tracked")]:
        state[key] = expected[key].clone()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or wrong):
        return state
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_listed(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_listed(unexpected)})")
    if wrong:
        shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in wrong]
        parts.append(f"{len(wrong)} wrong shape ({_listed(shapes)})")
    hint = ""
    try:
        head: str | None = classifier_name(model)
    except ValueError:  # no Linear module: no classifier to point at
        head = None
    if missing and unexpected and len(missing) >= len(expected) // 2:
        hint = "; the file looks like another architecture (or another key naming): check the arch"
    elif head and wrong and all(k.rpartition(".")[0] == head for k in wrong):
        outputs = tuple(state[f"{head}.weight"].shape)[0] if f"{head}.weight" in state else "?"
        hint = f"; the file's classifier {head!r} has {outputs} outputs: set num_classes to {outputs}"
    raise WeightsError(f"{path}: weights do not fit {arch}: " + "; ".join(parts) + hint)


# ---------------------------------------------------------------------------------------------------- class names


def read_class_names(source: str | Path | Sequence[str], num_classes: int) -> list[str]:
    """Class names from a list, a comma-separated string, a JSON list (``'["normal, benign", "malignant"]'``, for
    names holding commas) or a file (a ``Path``, or a string ``@file``): one per line.

    Raises:
        WeightsError: wrong count, empty or duplicate names (the message names the source and the values).
        FileNotFoundError: the file does not exist.
    """
    where = "class names"
    if isinstance(source, str) and source.startswith("@"):
        source = Path(source[1:])
    if isinstance(source, Path):
        if not source.is_file():
            raise FileNotFoundError(f"class names file {source} does not exist")
        where = f"class names file {source}"
        names = [line.strip() for line in source.read_text().splitlines() if line.strip()]
    elif isinstance(source, str) and source.lstrip().startswith("["):
        try:
            parsed = json.loads(source)
        except json.JSONDecodeError as error:
            raise WeightsError(f"{where}: {source!r} is not a JSON list of names ({error})") from None
        if not isinstance(parsed, list) or not all(isinstance(name, str) for name in parsed):
            raise WeightsError(f"{where}: {source!r} must be a JSON list of strings")
        names = [name.strip() for name in parsed]
    elif isinstance(source, str):
        names = [part.strip() for part in source.split(",")]
    else:
        names = [str(name).strip() for name in source]
    if len(names) != num_classes:
        raise WeightsError(f"{where}: {len(names)} names {names[:6]} but num_classes is {num_classes}")
    if any(not name for name in names) or len(set(names)) != len(names):
        raise WeightsError(f"{where}: names must be non-empty and distinct, got {names}")
    return names


@functools.lru_cache(maxsize=8)
def dataset_class_names(dataset: str, data_root: str | None = None) -> tuple[str, ...]:
    """The class names of ``dataset`` in label order, as every later command reads it (``load_dataset``).

    Raises:
        DatasetError / DatasetNotFoundError: an unknown dataset or missing files (the message says what to put where).
    """
    return tuple(str(name) for name in load_dataset(dataset, data_root, image_size=28, channels=3).class_names)


def class_names_from_dataset(
    given: str | Path | Sequence[str] | None, num_classes: int, dataset: str, data_root: str | None = None
) -> list[str] | None:
    """The class names a checkpoint recording ``dataset`` must carry: the dataset's own, checked against ``given``.

    Every later command refuses a checkpoint whose class names differ from its dataset's, so an import is refused
    at once instead. When the dataset's files are not in ``data_root`` (the import needs no data), the check is
    skipped with a warning and ``given`` is read as it is (``None`` when not given).

    Args:
        given: class names as :func:`read_class_names` takes them, or ``None`` to take the dataset's.
        num_classes: the model's outputs. dataset: the dataset name to record. data_root: its folder (``None``: the
            default data folder).

    Raises:
        WeightsError: the dataset has another number of classes, or ``given`` differs from its names.
        DatasetError: an unknown dataset name.
    """
    try:
        names = list(dataset_class_names(dataset, data_root))
    except DatasetNotFoundError as error:
        logger.warning("class names not checked against dataset %r, whose files were not found: %s", dataset, error)
        return read_class_names(given, num_classes) if given is not None else None
    if len(names) != num_classes:
        raise WeightsError(f"dataset {dataset!r} has {len(names)} classes {names} but num_classes is {num_classes}")
    if given is not None:
        listed = read_class_names(given, num_classes)
        if listed != names:
            raise WeightsError(
                f"class names {listed} differ from those of dataset {dataset!r}, {names} (label order); every later "
                "command would refuse the checkpoint: give the dataset's names in its order, or leave them out to "
                "take the dataset's"
            )
    return names


# ---------------------------------------------------------------------------------------------------------- import


def import_model(
    arch: str,
    weights: str | Path,
    num_classes: int,
    *,
    image_size: int = 224,
    in_channels: int | None = None,
    class_names: str | Path | Sequence[str] | None = None,
    out_dir: str | Path = "imported",
    dataset: str | None = None,
    data_root: str | None = None,
) -> ImportResult:
    """Turn a trained torchvision / timm classifier's weights into a medprune checkpoint.

    Args:
        arch: a torchvision classification model (``resnet18`` or ``torchvision:resnet18``) or ``timm:<name>``.
        weights: ``.safetensors`` or a ``torch.save``-d state dict (``.pt``/``.pth``/``.bin``; never fully unpickled).
        num_classes: the model's outputs; the classifier head is built with this many before loading.
        image_size: input side the data pipeline resizes images to (ViTs are built for it: ``img_size``).
        in_channels: channels of the data (1 = grey, 3 = RGB); ``None``: those of the weights' first conv. Grey data
            with a 3-channel first conv records an input adapter (grey repeated to 3 channels).
        class_names: list, comma-separated string, or file (``Path`` / ``"@file"``) with one name per line;
            default ``"0"``, ``"1"``, …
        out_dir: folder of the checkpoint (``model.safetensors`` + ``model.json``).
        dataset: dataset name to record in the sidecar, so ``evaluate`` / ``score`` / ``sweep`` need no ``--dataset``;
            its class names are read and must equal ``class_names`` (taken from it when ``class_names`` is ``None``).
        data_root: the dataset's folder (``None``: the default data folder).

    Returns:
        An :class:`ImportResult`; the checkpoint has been re-loaded with :func:`medprune.checkpoint.load_checkpoint`.

    Raises:
        WeightsError: refused file, bad arch / class names, or weights that do not fit (keys named).
        FileNotFoundError: missing weights or class-names file.
    """
    path = Path(weights)
    name = canonical_arch(arch)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise WeightsError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if in_channels not in (None, 1, 3):
        raise WeightsError(f"in_channels must be 1 or 3, got {in_channels!r}")
    if dataset is not None:
        names = class_names_from_dataset(class_names, num_classes, dataset, data_root)
    else:
        names = read_class_names(class_names, num_classes) if class_names is not None else None
    state, notes = read_state_dict(path)
    try:
        model = create_model(name, num_classes=num_classes, in_channels=3, image_size=image_size)
    except (ValueError, TypeError) as error:
        raise WeightsError(f"arch {arch!r}: {error}") from error
    conv_key = _first_conv_key(model)
    file_channels = int(state[conv_key].shape[1]) if conv_key in state and state[conv_key].dim() == 4 else 3
    if file_channels not in (1, 3):
        raise WeightsError(f"{path}: first conv {conv_key!r} takes {file_channels} channels; medprune supports 1 or 3")
    data_channels = file_channels if in_channels is None else in_channels
    adapter = None
    if data_channels == 1 and file_channels == 3:
        adapter = {"kind": "repeat_channels", "from": 1, "to": 3}
        notes.append(f"grey inputs are repeated to the 3 channels of {conv_key!r} (input adapter)")
        logger.info("%s: %s", path.name, notes[-1])
    elif data_channels == 3 and file_channels == 1:
        raise WeightsError(f"{path}: first conv {conv_key!r} takes 1 channel but in_channels is 3; pass in_channels=1")
    if file_channels == 1:
        model = create_model(name, num_classes=num_classes, in_channels=1, image_size=image_size)
    model.load_state_dict(check_keys(model, state, path, name), strict=True)
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.zeros(1, file_channels, image_size, image_size))
    except RuntimeError as error:
        raise WeightsError(f"{name} does not run on {image_size}-px inputs ({str(error).splitlines()[0]})") from error
    if tuple(logits.shape) != (1, num_classes):
        raise WeightsError(f"{name} returns logits of shape {tuple(logits.shape)}, expected (1, {num_classes})")
    meta: dict[str, Any] = {
        "imported_from": {"file": path.name, "sha256": _sha256(path), "notes": notes},
        "input_adapter": adapter,
        "normalization": {
            "mean": list(IMAGENET_MEAN if file_channels == 3 else GREY_MEAN),
            "std": list(IMAGENET_STD if file_channels == 3 else GREY_STD),
        },
    }
    if names is not None:
        meta["class_names"] = names
    if dataset is not None:
        meta["dataset"] = {"name": dataset}
    weights_path = save_checkpoint(Path(out_dir) / "model", model, meta)
    reloaded, sidecar = load_checkpoint(weights_path)
    if model_checksum(reloaded) != model_checksum(model):
        raise RuntimeError(f"{weights_path}: re-loaded weights differ from the imported ones")
    logger.info("imported %s (%s, %d classes) -> %s", path, name, num_classes, weights_path)
    return ImportResult(
        weights=weights_path,
        sidecar=weights_path.with_suffix(".json"),
        arch=name,
        num_classes=num_classes,
        in_channels=file_channels,
        image_size=image_size,
        input_adapter=adapter,
        notes=tuple(notes),
    )
