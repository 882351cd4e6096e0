"""medprune: interpretability-aware pruning of medical image classifiers.

The one-call entry point is :func:`compress` (``medprune.compress("runs/train/model.safetensors")``): a trained
checkpoint in, a smaller recovered model with its ONNX export and model card out. Every other command lives in
``medprune.runs`` (one module per command) and the building blocks in their own modules (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["CompressConfig", "CompressResult", "__version__", "compress"]

#: Names served from :mod:`medprune.runs.compress` on first use.
_LAZY = ("compress", "CompressConfig", "CompressResult")


def __getattr__(name: str) -> Any:
    """PEP 562: ``medprune.compress`` loads the compress stack on first use, so ``import medprune`` (and any
    ``medprune.x`` submodule import, which runs this file first) stays light: scripts that need one module, such as
    the dl-backtrace oracle in its own old-torch environment, do not pull in ONNX, torch-pruning or scipy."""
    if name in _LAZY:
        from medprune.runs import compress as module  # the one deliberate lazy import (tests/test_architecture.py)

        return getattr(module, name)
    raise AttributeError(f"module 'medprune' has no attribute {name!r}")
