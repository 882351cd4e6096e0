"""Evaluation tensors kept on the model's device: each host tensor is sent once, then reused for every rate and curve.

A sweep evaluates hundreds of pruned models on the same stacked validation and test images. Sending those images to
the GPU for every pruned model costs more than evaluating them (0.7 GB for PneumoniaMNIST at 224 px), so
:func:`on_device` keeps one device copy per host tensor and device and hands it back on every later call, whichever
curve (executor task) asks. The copy lives as long as the host tensor (it is dropped when the host tensor is garbage
collected) and is made again if the host tensor was changed in place since. A tensor already on the device is used as
it is (no copy, no extra memory): on the CPU the sweep evaluates exactly the tensors it was given.

>>> images = torch.zeros(4, 1, 28, 28)
>>> on_device(images, torch.device("cpu")) is images
True
"""

from __future__ import annotations

import threading
import weakref

import torch
from torch import Tensor

__all__ = ["transfer", "on_device", "cached_copies"]

_Key = tuple[int, str]
#: ``(id(host), device) -> (host version when copied, device copy or None when the host tensor is already there)``.
_COPIES: dict[_Key, tuple[int, Tensor | None]] = {}
_LOCK = threading.Lock()


def transfer(tensor: Tensor, device: torch.device) -> Tensor:
    """The one host-to-device copy of an evaluation tensor (a no-op returning ``tensor`` when it is already there)."""
    return tensor.to(device, non_blocking=False)


def _version(tensor: Tensor) -> int:
    """The tensor's in-place change counter (-1 for an inference tensor, which has none and is never changed)."""
    try:
        return int(tensor._version)
    except RuntimeError:
        return -1


def _forget(key: _Key) -> None:
    with _LOCK:
        _COPIES.pop(key, None)


def on_device(tensor: Tensor, device: torch.device | str) -> Tensor:
    """``tensor`` on ``device``, sent there at most once per (tensor, device) while ``tensor`` lives unchanged.

    Args:
        tensor: a host tensor that is only read (e.g. the stacked images of an evaluation split).
        device: where the model runs.

    Returns:
        The cached device copy, or ``tensor`` itself when it already lies on ``device``.
    """
    target = torch.device(device)
    key = (id(tensor), str(target))
    version = _version(tensor)
    with _LOCK:
        cached = _COPIES.get(key)
    if cached is not None and cached[0] == version:
        return tensor if cached[1] is None else cached[1]
    moved = transfer(tensor, target)
    with _LOCK:
        fresh = key not in _COPIES
        _COPIES[key] = (version, None if moved is tensor else moved)
    if fresh:  # the entry goes when the host tensor does (before its id can be reused)
        weakref.finalize(tensor, _forget, key)
    return moved


def cached_copies() -> int:
    """How many (host tensor, device) pairs are cached now (for tests and logs)."""
    with _LOCK:
        return len(_COPIES)
