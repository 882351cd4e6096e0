"""medprune: interpretability-aware pruning of medical image classifiers.

The one-call entry point is :func:`compress` (``medprune.compress("runs/train/model.safetensors")``): a trained
checkpoint in, a smaller recovered model with its ONNX export and model card out. Every other command lives in
``medprune.runs`` (one module per command) and the building blocks in their own modules (docs/architecture.md).
"""

from __future__ import annotations

__version__ = "0.1.0"

from medprune.runs.compress import CompressConfig, CompressResult, compress  # noqa: E402 - after __version__

__all__ = ["CompressConfig", "CompressResult", "__version__", "compress"]
