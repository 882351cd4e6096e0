"""Helpers shared by the tests (not part of the library)."""

from __future__ import annotations

from torch import nn


def has_hooks(model: nn.Module) -> bool:
    """Whether any module of ``model`` still carries a forward/backward hook (nothing may be left behind)."""
    for module in model.modules():
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks:
            return True
        if getattr(module, "_backward_pre_hooks", None):
            return True
    return False
