"""Runtime: device choice, mixed precision, seeding and eval mode — the one place that knows about CUDA and RNGs.

>>> resolve_device("cpu")
device(type='cpu')
>>> model = torch.nn.Dropout()
>>> with eval_mode(model):
...     model.training
False
>>> model.training
True
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from torch import nn

DeviceName = Literal["auto", "cpu", "cuda"]

__all__ = [
    "DeviceName",
    "fixed_threads",
    "resolve_device",
    "model_device",
    "amp_enabled",
    "autocast",
    "grad_scaler",
    "seed_everything",
    "eval_mode",
]


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


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` lives: the device of its first parameter (or buffer); the CPU for a model holding neither.

    >>> model_device(torch.nn.Linear(2, 2)), model_device(torch.nn.ReLU())
    (device(type='cpu'), device(type='cpu'))
    """
    first = next(iter([*model.parameters(), *model.buffers()]), None)
    return first.device if first is not None else torch.device("cpu")


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


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) and return a torch generator seeded the same way.

    Args:
        seed: any non-negative integer.

    Returns:
        A ``torch.Generator`` seeded with ``seed`` for code that wants its own stream.

    >>> g = seed_everything(0)
    >>> isinstance(g, torch.Generator)
    True
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its previous train/eval mode after, even on error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op CPU threads, restored after (even on error).

    CPU kernels split their sums by thread, so the same computation with 1 and 2 threads can differ in the last bits,
    and a rate chosen near a threshold can flip: pinning the count makes a run's numbers independent of the machine's
    default.

    >>> with fixed_threads(1):
    ...     torch.get_num_threads()
    1
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
