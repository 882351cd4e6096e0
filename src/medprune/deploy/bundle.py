"""What a shipped model needs beside its weights: the preprocessing an input must get (from the checkpoint's
sidecar), and a MONAI bundle of it (:func:`write_monai_bundle`).

The bundle follows MONAI's layout: ``configs/metadata.json`` (MONAI's metadata schema, plus a ``medprune`` entry with
the pruning and quantization provenance), ``configs/inference.json`` (the network as TorchScript), ``models/``
(``model.ts``, ``model.onnx`` and the int8 ``model.int8.onnx`` when it shipped) and ``docs/README.md`` (the model
card, its images beside it). ``models/model.pt`` (the state dictionary, loadable with ``torch.load(...,
weights_only=True)``) is there because the specification requires it; the network to load it into is medprune's
smaller architecture, so ``inference.json`` loads the TorchScript model instead.

Every bundle written is checked before it is handed over (:func:`check_bundle`): the files the specification
requires, and ``metadata.json`` against ``monai_metadata.schema.json`` (beside this module: the specification's
mandatory keys and tensor format keys, written out as a JSON schema, so the check runs offline; ``jsonschema`` comes
with the ``monai`` extra). MONAI's own schema (the URL in ``schema``) is what ``monai.bundle verify_metadata``
checks where it can be fetched.

>>> preprocessing({"model": {"image_size": 28, "in_channels": 3},
...                "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}})["input"]
'float32 tensor (N, 3, 28, 28), named images'
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medprune.runtime import eval_mode

logger = logging.getLogger(__name__)

__all__ = ["MONAI_SCHEMA", "METADATA_SCHEMA", "preprocessing", "bundle_metadata", "check_bundle", "write_monai_bundle"]

#: The metadata schema MONAI's model zoo bundles name (``monai.bundle.verify_metadata`` downloads it).
MONAI_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
)
#: The specification's metadata keys as a JSON schema (see the module docstring): what :func:`check_bundle` checks.
METADATA_SCHEMA = Path(__file__).with_name("monai_metadata.schema.json")
#: Files the specification requires in every bundle.
REQUIRED_FILES = ("configs/metadata.json", "models/model.pt")
#: The network of ``configs/inference.json``: the TorchScript model, no medprune needed to load it.
INFERENCE_CONFIG = {
    "imports": ["$import torch"],
    "bundle_root": ".",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "network_def": "$torch.jit.load(@bundle_root + '/models/model.ts', map_location='cpu')",
    "network": "$@network_def.to(@device).eval()",
}


def preprocessing(meta: Mapping[str, Any], transform: Any = None) -> dict[str, Any]:
    """The preprocessing of the model a checkpoint sidecar (``model.json``) describes, as the card states it.

    Args:
        meta: the sidecar (``model.image_size`` / ``model.in_channels`` or their top-level copies, and
            ``normalization`` with ``mean`` and ``std``).
        transform: the evaluation transform the data was read with (an
            :class:`~medprune.data.transforms.ImageTransform`): what a sidecar without ``normalization`` (one
            written outside ``medprune train``) leaves out is read from it.
    """
    model = meta.get("model") or {}
    size = model.get("image_size", meta.get("image_size", getattr(transform, "image_size", None)))
    channels = model.get("in_channels", meta.get("in_channels", getattr(transform, "channels", None)))
    normalization = meta.get("normalization") or {
        "mean": list(getattr(transform, "mean", []) or []) or None,
        "std": list(getattr(transform, "std", []) or []) or None,
    }
    steps = [
        f"resize to {size} x {size} pixels (antialiased) when the image has another size",
        "scale uint8 pixel values to [0, 1] (divide by 255)",
        f"normalise each channel: (x - mean) / std with mean {normalization.get('mean')} and std "
        f"{normalization.get('std')}",
    ]
    if channels == 3:
        steps.append("a grey image is normalised with these statistics and its one channel repeated to 3")
    elif channels == 1:
        steps.insert(0, "a colour image is converted to grey first")
    return {
        "input": f"float32 tensor (N, {channels}, {size}, {size}), named images",
        "output": "logits (N, classes), named logits; softmax gives class probabilities",
        "image size": size,
        "channels": channels,
        "mean": normalization.get("mean"),
        "std": normalization.get("std"),
        "steps": steps,
    }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _eval_metrics(test: Mapping[str, Any], quantization: Mapping[str, Any]) -> dict[str, float]:
    """The test metrics of the model the bundle ships: the int8 model's (ONNX Runtime) when it shipped."""
    int8 = (quantization.get("equivalence") or {}).get("test", {}).get("ONNX Runtime int8")
    if quantization.get("shipped") and int8:
        return {f"test {key} (int8)": int8[key] for key in ("accuracy", "balanced_accuracy") if int8[key] is not None}
    keys = ("accuracy", "balanced_accuracy", "auroc", "worst_class_recall")
    return {f"test {key}": test[key] for key in keys if test.get(key) is not None}


def bundle_metadata(card: Mapping[str, Any]) -> dict[str, Any]:
    """``configs/metadata.json`` of the bundle of a compress card (``card.json``'s content): MONAI's fields, and a
    ``medprune`` entry with the provenance (base model, relation, pruning choice, quantization, preprocessing)."""
    prep = card.get("preprocessing") or {}
    names = [c["name"] for c in card["test_compressed"]["per_class"]]
    quantization = card.get("quantization") or {}
    mean, std = np.asarray(prep.get("mean") or [0.0]), np.asarray(prep.get("std") or [1.0])
    channels, size = prep.get("channels"), prep.get("image size")
    colour = {1: {"0": "grey"}, 3: {"0": "R (grey repeated)", "1": "G (grey repeated)", "2": "B (grey repeated)"}}
    test = card["test_compressed"]
    base = card.get("base_model") or {}
    choice = card.get("choice") or {}
    return {
        "schema": MONAI_SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"medprune compress: {card.get('relation', 'pruned')} from {base.get('name')}"},
        "monai_version": _version("monai"),
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        # models/model.ts needs torch only; the specification names the first key, MONAI 1.4+ writes the second
        "optional_packages_version": {},
        "required_packages_version": {},
        "name": card["title"],
        "task": f"image classification of {card['source'].get('dataset')} into {', '.join(names)}",
        "description": (
            f"{card['source'].get('architecture')} trained on {card['source'].get('dataset')}, "
            f"{card.get('relation', 'pruned')} by medprune compress; see docs/README.md (the model card)"
        ),
        "authors": "produced by medprune compress from the base model named in medprune.base_model",
        "copyright": f"as the base model {base.get('name')} (SHA-256 {base.get('sha256')})",
        "data_source": str(card["source"].get("dataset")),
        "data_type": "uint8 images (MedMNIST arrays)",
        "image_classes": f"{channels}-channel image of {size} x {size} pixels, normalised (see medprune.preprocessing)",
        "label_classes": ", ".join(f"{i}: {n}" for i, n in enumerate(names)),
        "pred_classes": f"{len(names)} logits, one per class (softmax for probabilities)",
        "eval_metrics": _eval_metrics(test, quantization),
        "intended_use": "research on the compression of medical image classifiers; not a medical device",
        "references": [],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": str(card["source"].get("dataset")),
                    "num_channels": channels,
                    "spatial_shape": [size, size],
                    "dtype": "float32",
                    "value_range": [float(((0 - mean) / std).min()), float(((1 - mean) / std).max())],
                    "is_patch_data": False,
                    "channel_def": colour.get(channels, {}),
                }
            },
            "outputs": {
                "pred": {
                    "type": "logits",
                    "format": "classes",
                    "num_channels": len(names),
                    "spatial_shape": [1, len(names)],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {str(i): n for i, n in enumerate(names)},
                }
            },
        },
        "medprune": {
            "base_model": base,
            "relation": card.get("relation", "pruned"),
            "pruning": {
                key: choice.get(key)
                for key in ("method", "sampling", "chosen rate", "unit rate", "metric", "tolerance", "decision rule")
            }
            | {"MACs removed (fraction)": card["totals"].get("MACs removed (fraction)")},
            "quantization": {
                key: quantization.get(key) for key in ("format", "weights", "activations", "shipped", "why not", "file")
            }
            if quantization
            else None,
            "preprocessing": prep,
            "card": "docs/README.md",
            "versions": {"medprune": _version("medprune"), "onnxruntime": _version("onnxruntime")},
        },
    }


def write_monai_bundle(
    folder: str | Path,
    *,
    model: nn.Module,
    example: Tensor,
    card: Mapping[str, Any],
    card_md: str | Path,
    onnx_files: Mapping[str, str | Path],
) -> Path:
    """Write the MONAI bundle of a shipped model (see the module docstring).

    Args:
        folder: the bundle's folder (created; its content replaced).
        model: the compressed PyTorch model, traced to ``models/model.ts`` with ``example`` (1, C, H, W).
        card: ``card.json``'s content. card_md: ``card.md``; it becomes ``docs/README.md`` with the images it links.
        onnx_files: name in ``models/`` -> ONNX file to copy (``model.onnx``, and ``model.int8.onnx`` when shipped).

    Returns:
        The bundle's folder.
    """
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    for part in ("configs", "models", "docs"):
        (folder / part).mkdir(parents=True)
    with eval_mode(model), torch.no_grad():
        traced = torch.jit.trace(model, example[:1].float())
    traced.save(str(folder / "models" / "model.ts"))
    torch.save(
        {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}, folder / "models" / "model.pt"
    )
    for name, path in onnx_files.items():
        shutil.copyfile(path, folder / "models" / name)
    metadata = bundle_metadata(card)
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2, allow_nan=False) + "\n")
    (folder / "configs" / "inference.json").write_text(json.dumps(INFERENCE_CONFIG, indent=2) + "\n")
    text = Path(card_md).read_text()
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        source = Path(card_md).parent / image
        if source.is_file():
            shutil.copyfile(source, folder / "docs" / Path(image).name)
    (folder / "docs" / "README.md").write_text(text)
    problems = check_bundle(folder)
    if problems:
        raise RuntimeError(f"the MONAI bundle {folder} does not follow the specification: {'; '.join(problems)}")
    return folder


def check_bundle(folder: str | Path) -> list[str]:
    """What in the bundle at ``folder`` breaks the specification (empty: nothing found): missing required files, and
    ``configs/metadata.json`` against :data:`METADATA_SCHEMA` (each problem names the key path). Without
    ``jsonschema`` (the ``monai`` extra) the metadata's schema part is skipped, with a warning in the log."""
    folder = Path(folder)
    problems = [f"{name} is missing" for name in REQUIRED_FILES if not (folder / name).is_file()]
    metadata_file = folder / "configs" / "metadata.json"
    if not metadata_file.is_file():
        return problems
    try:
        import jsonschema  # optional extra (monai)
    except ImportError:
        logger.warning("jsonschema is not installed (pip install 'medprune[monai]'): %s not checked", metadata_file)
        return problems
    schema = json.loads(METADATA_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    for error in sorted(validator.iter_errors(json.loads(metadata_file.read_text())), key=lambda e: list(e.path)):
        where = "/".join(str(part) for part in error.path) or "(top level)"
        problems.append(f"configs/metadata.json {where}: {error.message}")
    return problems
