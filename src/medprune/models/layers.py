"""Small layer-building helpers shared by the model builders (:mod:`medprune.models`, :mod:`medprune.models.external`).

>>> from torch import nn
>>> with_in_channels(nn.Conv2d(3, 8, 3, padding=1), 1).in_channels
1
"""

from __future__ import annotations

from torch import nn

__all__ = ["with_in_channels"]


def with_in_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """``conv`` itself when it already reads ``in_channels``, else a fresh (randomly initialised) Conv2d like it.

    The new layer keeps the output channels, kernel size, stride, padding and bias of ``conv``, not its weights.
    """
    if in_channels == conv.in_channels:
        return conv
    return nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None
    )
