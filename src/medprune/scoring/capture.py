"""Capture unit activations *as autograd nodes*, safe from in-place operations downstream.

:func:`medprune.units.capture_activations` records the tensor a module hands on. When the next module works in place
(torchvision VGG19's ``ReLU(inplace=True)`` right after each conv), that tensor is overwritten and its autograd node
replaced, so gradients "at the conv output" would silently be gradients at the ReLU output. Here each hook hands the
network a clone and keeps the original, so the recorded tensor stays the unit's true activation and
``torch.autograd.grad(logit, recorded)`` is the gradient at that activation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import Tensor, nn

from medprune.units import UnitGroup, get_module


@contextmanager
def capture_for_backward(model: nn.Module, groups: Sequence[UnitGroup]) -> Iterator[dict[str, Tensor]]:
    """Record every group's activation during forward passes; hooks are removed on exit, even after errors.

    Args:
        model: the model.
        groups: groups to record.

    Yields:
        A dict each forward pass fills with ``{group.name: activation}``; the tensors are untouched by in-place
        operations later in the network, so they can be passed to ``torch.autograd.grad``.
    """
    store: dict[str, Tensor] = {}
    handles = []

    def output_hook(name: str):  # noqa: ANN202 - hook factory
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> Tensor:
            store[name] = output
            return output.clone()

        return hook

    def input_hook(name: str):  # noqa: ANN202 - hook factory
        def hook(_module: nn.Module, inputs: tuple) -> tuple:
            store[name] = inputs[0]
            return (inputs[0].clone(), *inputs[1:])

        return hook

    try:
        for group in groups:
            module = get_module(model, group.module)
            if group.site == "output":
                handles.append(module.register_forward_hook(output_hook(group.name)))
            else:
                handles.append(module.register_forward_pre_hook(input_hook(group.name)))
        yield store
    finally:
        for handle in handles:
            handle.remove()
