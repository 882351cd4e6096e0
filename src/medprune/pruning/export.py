"""ONNX export of (pruned) models, checked against onnxruntime.

Two exporters, both checked on pruned VGG, ResNet and ViT models (``tests/test_export.py``; max |onnxruntime - torch|
about 1e-7 on logits of order 1, float32):

- ``legacy`` (TorchScript, ``torch.onnx.export(..., dynamo=False)``), the default here: 5-10x faster to export on CPU
  (vit_small 32 px: ~9 s against ~50 s on a loaded 2-core machine) and exact;
- ``dynamo`` (``torch.export``-based, torch 2.14's own default), tried automatically if the legacy exporter raises
  (e.g. once it is removed from torch), or chosen explicitly.

>>> from medprune.models import create_model
>>> model = create_model("resnet_small", num_classes=2, image_size=32)
>>> path = export_onnx(model, "/tmp/resnet_small.onnx", torch.zeros(1, 3, 32, 32))  # doctest: +SKIP
"""

from __future__ import annotations

import io
import logging
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from medprune.runtime import eval_mode

logger = logging.getLogger(__name__)

Exporter = Literal["dynamo", "legacy"]
EXPORTERS: tuple[str, ...] = ("legacy", "dynamo")


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example_inputs: Tensor,
    *,
    exporter: Exporter = "legacy",
    dynamic_batch: bool = True,
    opset: int = 18,
    fallback: bool = True,
) -> Path:
    """Export ``model`` (in eval mode, float32) to a single ONNX file with input ``images`` and output ``logits``.

    Args:
        model: the (pruned) model; not changed (its train/eval mode is restored).
        path: the ``.onnx`` file to write (parent folders are created).
        example_inputs: an (N, C, H, W) batch; its dtype and spatial size are fixed in the graph.
        exporter: ``legacy`` (TorchScript, ``dynamo=False``) or ``dynamo`` (``torch.onnx.export(..., dynamo=True)``).
        dynamic_batch: let the batch dimension vary.
        opset: ONNX opset version.
        fallback: if the chosen exporter raises, try the other one (logged).

    Returns:
        The path written.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if example_inputs.dim() != 4:
        raise ValueError(f"example_inputs must be (N, C, H, W), got shape {tuple(example_inputs.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    order = [exporter, *([e for e in EXPORTERS if e != exporter] if fallback else [])]
    with eval_mode(model):
        for attempt, name in enumerate(order):
            try:
                _export(model, path, example_inputs, name, dynamic_batch, opset)
                return path
            except Exception as error:
                if attempt + 1 == len(order):
                    raise
                logger.warning("ONNX export with the %s exporter failed (%s); trying %s", name, error, order[-1])
    raise AssertionError("unreachable")


def _export(model: nn.Module, path: Path, x: Tensor, exporter: str, dynamic_batch: bool, opset: int) -> None:
    names = {"input_names": ["images"], "output_names": ["logits"]}
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):  # the dynamo exporter prints progress
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
            options: dict[str, Any] = {"dynamic_shapes": shapes, "external_data": False, "optimize": True}
        else:
            options = {"dynamic_axes": {"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None}
        torch.onnx.export(model, (x,), str(path), dynamo=exporter == "dynamo", opset_version=opset, **names, **options)
    logger.info("exported %s to %s (%s exporter)", type(model).__name__, path, exporter)


def run_onnx(path: str | Path, inputs: Tensor) -> Tensor:
    """Run an exported model in onnxruntime (CPU) and return its logits as a torch tensor (needs the ``onnx`` extra)."""
    import onnxruntime as ort  # optional extra

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": np.ascontiguousarray(inputs.detach().cpu().numpy())})
    return torch.from_numpy(logits)
