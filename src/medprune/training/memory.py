"""What one batch of a model costs in memory, estimated before any work, and the check that refuses what cannot fit.

The model is built on PyTorch's ``meta`` device (shapes only, no storage) and one batch is traced through it: the
estimate is the parameters (x4 when training: weights, gradients and Adam's two moments), the input batch and the
activations (every leaf module's output; kept for the backward pass when training, x2 for their gradients; only the
largest two at a time in evaluation). It is a rough lower bound of the real peak (allocator slack, attention matrices
inside fused kernels and workspace are not counted), meant to refuse requests that cannot fit at all (a 100,000-pixel
side, 10^8 classes, a sidecar asking a ViT for a 10^6-pixel image) with one line, before a data file is read or an
allocation is tried. A request whose parameters and input alone exceed the memory is refused without the trace.

>>> estimate = estimate_batch_memory("resnet_small", num_classes=2, image_size=28, batch_size=4)
>>> estimate.parameters > 0 and estimate.activations is not None and estimate.total > estimate.parameters
True
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from medprune.config import LimitError, limits_enabled
from medprune.models import create_model

logger = logging.getLogger(__name__)

__all__ = ["MemoryEstimate", "available_memory", "check_batch_memory", "estimate_batch_memory", "format_bytes"]

#: Bytes of one float32 value: parameters, inputs and activations are counted in float32 (AMP halves some of them).
FLOAT_BYTES = 4


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated bytes of one batch.

    Attributes:
        parameters: parameters and buffers (x4 for the parameters when training).
        inputs: the input batch.
        activations: the traced activations (``None``: not traced, the other two already exceed the memory, or the
            model could not be traced on the ``meta`` device).
        training: whether the batch is a training step (forward + backward + Adam) or an evaluation.
    """

    parameters: int
    inputs: int
    activations: int | None
    training: bool

    @property
    def total(self) -> int:
        """The estimate in bytes (a lower bound when the activations were not traced)."""
        return self.parameters + self.inputs + (self.activations or 0)

    def text(self) -> str:
        """``about 12.1 GiB (parameters 0.1 GiB, input 2.0 GiB, activations 10.0 GiB)``."""
        activations = "not traced" if self.activations is None else format_bytes(self.activations)
        at_least = "at least" if self.activations is None else "about"
        return (
            f"{at_least} {format_bytes(self.total)} (parameters {format_bytes(self.parameters)}, input "
            f"{format_bytes(self.inputs)}, activations {activations})"
        )


def format_bytes(size: float) -> str:
    """``1536`` -> ``'1.5 KiB'``; sizes beyond the exbibytes stay in EiB.

    >>> format_bytes(3 * 2**30)
    '3.0 GiB'
    """
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    power = 0 if size < 1024 else min(int(math.log(size, 1024)), len(units) - 1)
    return f"{size / 1024**power:.1f} {units[power]}" if power else f"{int(size)} B"


@functools.lru_cache(maxsize=64)
def estimate_batch_memory(
    model: str,
    num_classes: int,
    image_size: int,
    in_channels: int = 3,
    batch_size: int = 1,
    *,
    training: bool = False,
    budget: int | None = None,
) -> MemoryEstimate:
    """Estimate the memory of one batch of registered ``model`` (see the module docstring).

    Args:
        model: a name :func:`medprune.models.create_model` takes.
        num_classes, image_size, in_channels: as for :func:`~medprune.models.create_model`.
        batch_size: images in the batch.
        training: a training step (parameters x4, activations kept and their gradients) rather than an evaluation.
        budget: skip the trace when parameters and input alone exceed this many bytes.

    Raises:
        ValueError: the model cannot be built with these sizes (its message).
    """
    with torch.device("meta"):
        network = create_model(model, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    weights = sum(p.numel() for p in network.parameters()) * FLOAT_BYTES * (4 if training else 1)
    buffers = sum(b.numel() * b.element_size() for b in network.buffers())
    inputs = batch_size * in_channels * image_size * image_size * FLOAT_BYTES
    parameters = weights + buffers
    activations = None
    if budget is None or parameters + inputs <= budget:
        activations = _trace(network, batch_size, in_channels, image_size, training)
    return MemoryEstimate(parameters, inputs, activations, training)


def _trace(network: nn.Module, batch_size: int, in_channels: int, image_size: int, training: bool) -> int | None:
    """Bytes of the leaf modules' outputs of one forward pass on the ``meta`` device (``None``: it cannot run)."""
    sizes: list[int] = []

    def record(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * FLOAT_BYTES)

    leaves = [m for m in network.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        with torch.no_grad():
            network(torch.empty(batch_size, in_channels, image_size, image_size, device="meta"))
    except (RuntimeError, ValueError, TypeError, OverflowError, NotImplementedError) as error:
        logger.debug("memory trace failed (%s); estimating from parameters and input only", error)
        return None
    finally:
        for handle in handles:
            handle.remove()
    if training:
        return 2 * sum(sizes)
    return sum(sorted(sizes)[-2:])


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Bytes a run can still allocate on ``device``: free CUDA memory, or the host's available memory (within a
    cgroup's limit when there is one); ``None`` when it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    available = _meminfo_available()
    limit = _cgroup_room()
    candidates = [value for value in (available, limit) if value is not None]
    return min(candidates) if candidates else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """Bytes left under a cgroup v2 memory limit (``None``: no limit or no cgroup v2)."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def check_batch_memory(
    model: str,
    num_classes: int,
    image_size: int,
    in_channels: int = 3,
    batch_size: int = 1,
    *,
    training: bool = False,
    device: str | torch.device = "cpu",
    what: str = "",
) -> MemoryEstimate | None:
    """Estimate one batch (:func:`estimate_batch_memory`) and refuse it when it exceeds :func:`available_memory`.

    Nothing is checked (``None``) while the bounds are lifted (``--no-limits``), or when the model cannot be built
    with these sizes (the run's own checks say why).

    Args:
        what: where the request comes from, for the message (``"model.json"``, ``"--image-size 512"``).

    Raises:
        LimitError: one line with the request, the estimate and the memory available.
    """
    if not limits_enabled():
        return None
    room = available_memory(device)
    try:
        estimate = estimate_batch_memory(
            model, num_classes, image_size, in_channels, batch_size, training=training, budget=room
        )
    except (ValueError, TypeError, KeyError, RuntimeError) as error:
        logger.debug("no memory estimate for %s (%s)", model, error)
        return None
    kind = "training batch" if training else "batch"
    request = f"one {kind} of {batch_size} image(s) of {model} at {image_size} px, {num_classes} classes"
    source = f" ({what})" if what else ""
    logger.log(logging.INFO if training else logging.DEBUG, "memory: %s%s needs %s", request, source, estimate.text())
    if room is not None and estimate.total > room:
        raise LimitError(
            f"{request}{source} needs {estimate.text()}, more than the {format_bytes(room)} available on "
            f"{torch.device(device)}; ask for a smaller image size, batch or model, or pass --no-limits to try anyway"
        )
    return estimate
