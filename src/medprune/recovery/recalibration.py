"""BatchNorm recalibration ("adaptive BN", EagleEye, Li et al. 2020): re-estimate running statistics after masking.

Pruning changes what every BatchNorm downstream of a pruned unit sees, while its running mean and variance still
describe the unpruned network; the decision threshold shifts even when the ranking of the classes (AUROC) does not.
:func:`recalibrate_batchnorm` re-estimates the statistics on ``k`` training images: the BatchNorm layers (only them)
run in training mode, so each one normalises with its batch's statistics as in EagleEye, and the running mean and
(unbiased) variance are set to the exact statistics of each BatchNorm's input over all ``k`` images, whatever the
batch size (with every image in one batch, ``batch_size=None``, the pass is also self-consistent: deeper layers see
inputs normalised with exactly the statistics that are stored). Weights and biases are not touched, so units zeroed
by :func:`medprune.pruning.masked.apply_masks` (weight, bias and the scale/shift of their BatchNorm are zero) still
output exactly 0.

:func:`recalibrated_batchnorm` does the same undoably: the returned handle (also a context manager) restores the
original buffers and momenta bit for bit, so a sweep can recalibrate at each rate inside ``apply_masks``:

>>> import torch
>>> from medprune.models import create_model
>>> from medprune.pruning import apply_masks, masks_from_scores
>>> from medprune.models.units import unit_groups
>>> model = create_model("resnet_small", num_classes=2, image_size=32)
>>> masks = masks_from_scores({g.name: torch.rand(g.num_units) for g in unit_groups(model)}, 0.5)
>>> images = torch.randn(64, 3, 32, 32)
>>> with apply_masks(model, masks), recalibrated_batchnorm(model, images, batch_size=32) as handle:
...     _ = model.eval()(images[:4])  # masked model with statistics re-estimated on the 64 images
>>> handle.num_layers
12
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from medprune.data.splitting import limit_dataset
from medprune.metrics import iterate_batches
from medprune.runtime import model_device

logger = logging.getLogger(__name__)

__all__ = [
    "BatchNormHandle",
    "batchnorm_layers",
    "recalibrate_batchnorm",
    "recalibrated_batchnorm",
    "recalibration_subset",
]

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm modules of ``model`` that keep running statistics (the ones recalibration changes)."""
    return [m for m in model.modules() if isinstance(m, _BATCHNORMS) and m.track_running_stats]


def recalibration_subset(train: Any, samples: int | None, seed: int) -> Any:
    """The images BatchNorm recalibration uses, the one picker of training, sweep and compress: a stratified subset of
    ``samples`` training images drawn with ``seed`` (every present class keeps >= 1;
    :func:`medprune.data.splitting.limit_dataset`), under the evaluation transform.

    Args:
        train: the training split (an :class:`~medprune.data.base.ImageDataset`; its transform is replaced by the
            evaluation one when it has ``with_transform``).
        samples: how many images (``None``, or at least the split's size: all of them).
        seed: draws the subset.
    """
    clean = train.with_transform(train=False) if hasattr(train, "with_transform") else train
    return limit_dataset(clean, samples, seed)


class BatchNormHandle:
    """The BatchNorm state before recalibration; ``restore()`` (idempotent) or leaving ``with`` puts it back.

    Attributes:
        num_layers: number of BatchNorm layers recalibrated (0 when the model has none).
    """

    def __init__(self, model: nn.Module, num_layers: int = 0) -> None:
        self.num_layers = num_layers
        self._saved: list[tuple[nn.Module, dict[str, Tensor], Any]] = [
            (norm, {name: buffer.detach().clone() for name, buffer in _buffers(norm).items()}, norm.momentum)
            for norm in batchnorm_layers(model)
        ]

    @property
    def active(self) -> bool:
        """Whether the recalibrated statistics are still in place."""
        return bool(self._saved)

    def restore(self) -> None:
        """Put back the original running statistics, batch counters and momenta (in place, bit for bit)."""
        with torch.no_grad():
            for norm, buffers, momentum in self._saved:
                for name, original in buffers.items():
                    getattr(norm, name).copy_(original)
                norm.momentum = momentum
        self._saved = []

    def __enter__(self) -> BatchNormHandle:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.restore()


def recalibrate_batchnorm(
    model: nn.Module,
    data: Any,
    *,
    batch_size: int | None = 256,
    device: str | torch.device | None = None,
) -> int:
    """Re-estimate every BatchNorm's running mean and variance on ``data``, in place; weights are untouched.

    Only the BatchNorm layers run in training mode (dropout and the rest stay in eval mode); every module's mode and
    every BatchNorm's momentum are restored afterwards, also after an error.

    Args:
        model: any model; without BatchNorm layers nothing happens.
        data: the ``k`` recalibration images: a Tensor ``(k, C, H, W)``, an ``(inputs, labels)`` tuple, a Dataset or
            a DataLoader (as for :func:`medprune.metrics.predict`; give it the evaluation transform).
        batch_size: images per forward pass; ``None`` puts all images in one batch (then the normalisation used
            during the pass equals the stored statistics exactly).
        device: where to run (default: the model's device).

    Returns:
        The number of BatchNorm layers recalibrated.

    Raises:
        ValueError: ``data`` holds no images, or ``batch_size`` is not a positive int or None.
    """
    norms = batchnorm_layers(model)
    if not norms:
        return 0
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None (one batch), got {batch_size!r}")
    target = torch.device(device) if device is not None else model_device(model)
    modes = {module: module.training for module in model.modules()}
    momenta = [norm.momentum for norm in norms]
    moments = {norm: _Moments() for norm in norms}
    hooks = [norm.register_forward_pre_hook(_recorder(moments[norm])) for norm in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # PyTorch's cumulative average; replaced below by the exact statistics
        norm.train()
    try:
        batches = 0
        with torch.no_grad():
            for inputs in _batches(data, batch_size):
                model(inputs.to(target))
                batches += 1
        if batches == 0:
            raise ValueError("recalibration data holds no images")
        with torch.no_grad():
            for norm in norms:
                moments[norm].store(norm)
    finally:
        for hook in hooks:
            hook.remove()
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        for module, training in modes.items():
            module.training = training
    logger.debug("recalibrated %d BatchNorm layers on %d batches", len(norms), batches)
    return len(norms)


def recalibrated_batchnorm(
    model: nn.Module,
    data: Any,
    *,
    batch_size: int | None = 256,
    device: str | torch.device | None = None,
) -> BatchNormHandle:
    """:func:`recalibrate_batchnorm`, undoably: returns a handle (a context manager) that restores the statistics.

    Args:
        model: the (e.g. masked) model.
        data: the recalibration images (see :func:`recalibrate_batchnorm`).
        batch_size: images per forward pass (``None``: one batch).
        device: where to run (default: the model's device).

    Returns:
        A :class:`BatchNormHandle`; ``restore()`` or the end of a ``with`` block puts the original buffers back.
        If recalibration fails the original statistics are restored before the error propagates.
    """
    handle = BatchNormHandle(model)
    try:
        handle.num_layers = recalibrate_batchnorm(model, data, batch_size=batch_size, device=device)
    except BaseException:
        handle.restore()
        raise
    return handle


class _Moments:
    """Per-channel count, mean and sum of squared deviations over batches (Chan et al.'s merge), in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, x: Tensor) -> None:
        channels = x.detach().transpose(0, 1).reshape(x.shape[1], -1).to(torch.float64)
        n = channels.shape[1]
        mean = channels.mean(dim=1)
        m2 = ((channels - mean[:, None]) ** 2).sum(dim=1)
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def store(self, norm: nn.Module) -> None:
        if self.mean is None or self.m2 is None:  # the layer was not reached (e.g. an unused branch)
            logger.warning("BatchNorm %s saw no input during recalibration; statistics reset", type(norm).__name__)
            return
        variance = self.m2 / max(self.count - 1, 1)  # unbiased, as PyTorch stores it
        norm.running_mean.copy_(self.mean.to(norm.running_mean.dtype))
        norm.running_var.copy_(variance.to(norm.running_var.dtype))


def _recorder(moments: _Moments) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        moments.add(args[0])

    return hook


def _batches(data: Any, batch_size: int | None) -> Any:
    if isinstance(data, Tensor):
        size = len(data) if batch_size is None else batch_size
        return (data[i : i + size] for i in range(0, len(data), max(size, 1)))
    size = batch_size if batch_size is not None else _length(data)
    return (inputs for inputs, _ in iterate_batches(data, max(size, 1)))


def _length(data: Any) -> int:
    if isinstance(data, tuple):
        return len(data[0])
    try:
        return len(data)
    except TypeError:
        return 1


def _buffers(norm: nn.Module) -> dict[str, Tensor]:
    names = ("running_mean", "running_var", "num_batches_tracked")
    return {name: getattr(norm, name) for name in names if getattr(norm, name, None) is not None}
