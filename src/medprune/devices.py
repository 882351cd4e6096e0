"""Device choice and mixed precision: one place that knows about CUDA.

>>> resolve_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

DeviceName = Literal["auto", "cpu", "cuda"]

__all__ = ["DeviceName", "resolve_device", "autocast", "grad_scaler"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available else CPU; ``"cuda"`` without a GPU raises a clear error.

    Args:
        name: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
    """
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError as error:
            raise ValueError(f"device={name!r} is not allowed; valid values: auto, cpu, cuda, cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was requested but CUDA is not available; use device=cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r} is not supported; valid values: auto, cpu, cuda, cuda:N")
    return device


def amp_enabled(device: torch.device, requested: bool) -> bool:
    """Mixed precision is used only on CUDA (CPU autocast to bfloat16 is slower on most CPUs and changes numerics)."""
    return bool(requested) and device.type == "cuda"


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """``torch.autocast`` (float16) on CUDA when ``enabled``, else a no-op context."""
    if amp_enabled(device, enabled):
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A ``GradScaler`` active only with CUDA mixed precision (a disabled scaler passes values through)."""
    return torch.amp.GradScaler("cuda", enabled=amp_enabled(device, enabled))
