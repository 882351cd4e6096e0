"""Lean versions of zennit's rule hooks: the same LRP rules, about half the backward work.

zennit's :class:`~zennit.core.BasicHook` lets autograd differentiate through the original layer and then throws that
gradient away (the rule's relevance replaces it), and it evaluates every modified pass of a rule even when the pass's
input is all zeros (z+ and alpha-beta evaluate the negative-input passes on post-ReLU inputs, which are >= 0).
:func:`lean` turns a zennit rule into one that

- runs the layer on a detached input and reconnects it with a small autograd function whose backward *is* the rule
  (no wasted gradient of the original layer, no input clone), and
- skips a pass whose modified input is all zeros (its output is just its modified bias; its share of relevance is
  ``0 * gradient = 0``) and the gradient of a pass whose mapped output gradient is all zeros (gamma's sign pass).

Three rules go further: :class:`LeanZPlus` (post-ReLU inputs: one modified pass, computed in place),
:class:`LeanEpsilon` on dense layers and :class:`LeanNorm` on residual sums (the rule leaves the parameters alone, so
the forward pass's output is reused and the layer's input gradient is taken directly instead of running it again).
Each gives the same bits as the general lean step (bench/scoring_results.md has what each saves).

The rules, composites and canonizers are zennit's; tests check the lean hooks against zennit's stock hooks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from zennit.canonizers import CompositeCanonizer, SequentialMergeBatchNorm
from zennit.core import BasicHook, Hook, ParamMod
from zennit.layer import Sum
from zennit.rules import Epsilon, Norm, ZPlus
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer
from zennit.types import Activation, AvgPool, BatchNorm


class _PassThrough(torch.autograd.Function):
    """Forward: the layer output (computed from a detached input); backward: the output relevance, unchanged."""

    @staticmethod
    def forward(ctx, source: Tensor, output: Tensor) -> Tensor:  # noqa: ANN001
        return output.detach()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        return grad, None


class _Reconnect(torch.autograd.Function):
    """Forward: the layer output (computed from a detached input); backward: the rule's relevance for the input."""

    @staticmethod
    def forward(ctx, source: Tensor, output: Tensor, hook: _LeanHook, module: nn.Module) -> Tensor:  # noqa: ANN001
        ctx.hook, ctx.module = hook, module
        return output.detach()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # noqa: ANN001
        return ctx.hook.relevance(ctx.module, grad), None, None, None


def _bias_only(module: nn.Module, like: Tensor) -> Tensor:
    """The output of ``module`` (with its current, possibly modified, parameters) for an all-zero input."""
    bias = getattr(module, "bias", None)
    if bias is None:
        return like.new_zeros(()).expand_as(like)
    shape = [1] * like.dim()
    shape[-1 if isinstance(module, nn.Linear) else 1] = -1
    return bias.detach().view(shape).expand_as(like)


def _keep_source(stored: dict, input: tuple | Tensor) -> tuple | None:  # noqa: A002 - zennit's name
    """Store a hooked layer's first input as ``stored["source"]`` (what relevance flows back to) and return the inputs;
    ``None`` (nothing stored) when the input needs no gradient."""
    args = input if isinstance(input, tuple) else (input,)
    stored.pop("source", None)
    if not args[0].requires_grad:
        return None
    stored["source"] = args[0]
    return args


class _LeanHook(BasicHook):
    """Mixin (put before a zennit :class:`BasicHook` rule) replacing its autograd plumbing; the rule is unchanged."""

    def pre_forward(self, module: nn.Module, input: tuple) -> tuple | None:  # noqa: A002 - zennit's signature
        args = _keep_source(self.stored_tensors, input)
        if args is None:
            return None
        self.stored_tensors["version"] = args[0]._version
        return (args[0].detach(), *args[1:])

    def post_forward(self, module: nn.Module, input: tuple, output: Tensor) -> Tensor | None:  # noqa: A002
        source = self.stored_tensors.get("source")
        if source is None:
            return None
        return _Reconnect.apply(source, output, self, module)

    def _check_version(self, module: nn.Module) -> None:
        if self.stored_tensors["source"]._version != self.stored_tensors["version"]:
            raise RuntimeError(f"LRP: the input of {type(module).__name__} was modified in place after the layer ran")

    def relevance(self, module: nn.Module, out_grad: Tensor) -> Tensor:
        """The rule's relevance for the layer input, given the relevance (zennit's gradient) at its output."""
        original = self.stored_tensors["input"][0]
        self._check_version(module)
        inputs, outputs, computed = [], [], []
        with torch.enable_grad():
            for in_mod, param_mod, out_mod in zip(self.input_modifiers, self.param_modifiers, self.output_modifiers):
                value = in_mod(original)
                with ParamMod.ensure(param_mod)(module) as modified:
                    if outputs and not bool(value.any()):
                        output = _bias_only(modified, outputs[0])
                        computed.append(False)
                    else:
                        value = value.detach().requires_grad_()
                        output = modified.forward(value)
                        computed.append(True)
                inputs.append(value)
                outputs.append(out_mod(output))
            grad_outputs = self.gradient_mapper(out_grad, outputs)
            if isinstance(grad_outputs, Tensor):  # single-pass rules (epsilon, flat) map to one tensor
                grad_outputs = [grad_outputs]
            used = [i for i, done in enumerate(computed) if done and bool(grad_outputs[i].any())]
            grads = (  # nothing to differentiate when no relevance arrives (e.g. a fully pruned layer)
                torch.autograd.grad(
                    [outputs[i] for i in used], [inputs[i] for i in used], [grad_outputs[i] for i in used]
                )
                if used
                else ()
            )
        gradients = [value.new_zeros(()).expand_as(value) for value in inputs]
        for index, grad in zip(used, grads):
            gradients[index] = grad
        return self.reducer([value.detach() for value in inputs], gradients)


_LEAN_CLASSES: dict[type, type] = {}


def lean(rule: BasicHook) -> BasicHook:
    """The lean version of a zennit rule instance (same modifiers, mapper and reducer; see module docstring)."""
    cls = type(rule)
    if cls not in _LEAN_CLASSES:
        _LEAN_CLASSES[cls] = type(f"Lean{cls.__name__}", (_LeanHook, cls), {})
    copy = BasicHook.__new__(_LEAN_CLASSES[cls])
    BasicHook.__init__(
        copy, rule.input_modifiers, rule.param_modifiers, rule.output_modifiers, rule.gradient_mapper, rule.reducer
    )
    return copy


class LeanZPlus(_LeanHook, ZPlus):
    """zennit's ``ZPlus`` rule, lean; for non-negative inputs (post-ReLU) in three fused steps: ``z = conv+(x)``,
    ``s = R / (z + stabilizer)``, ``R_in = x * conv+^T(s)`` (z >= 0 there, so zennit's stabiliser adds +stabilizer)."""

    def __init__(self, stabilizer: float = 1e-6, zero_params: list[str] | None = None) -> None:
        ZPlus.__init__(self, stabilizer=stabilizer, zero_params=zero_params)
        self.stabilizer = float(stabilizer)
        self.zero_params = zero_params

    def copy(self) -> LeanZPlus:
        return LeanZPlus(self.stabilizer, self.zero_params)

    def relevance(self, module: nn.Module, out_grad: Tensor) -> Tensor:
        original = self.stored_tensors["input"][0]
        if original.numel() == 0 or bool(original.min() < 0):
            return super().relevance(module, out_grad)
        self._check_version(module)
        with torch.enable_grad(), ParamMod.ensure(self.param_modifiers[0])(module) as modified:
            value = original.detach().requires_grad_()
            positive = modified.forward(value)
            # in place on z's own storage (the conv's backward does not read its output): every activation-sized
            # tensor allocated here is a fresh mapping the kernel has to fault in, which costs more than the arithmetic
            scaled = positive.detach().add_(self.stabilizer)
            (grad,) = torch.autograd.grad(positive, value, torch.div(out_grad, scaled, out=scaled))
        return grad.mul_(original)


def stabilized(z: Tensor, epsilon: float) -> Tensor:
    """zennit's ``stabilize(z, epsilon)``, ``z + ((z == 0) + sign(z)) * epsilon``, bit for bit, in one new tensor
    instead of five (each step in place on the sign)."""
    out = torch.sign(z)
    out.add_(z == 0)
    return out.mul_(epsilon).add_(z)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class _ReusesOutput(_LeanHook):
    """Mixin for the single-pass rules that leave the layer's parameters as they are (epsilon, norm): their
    backward step is ``R_in = x * vjp(R / stabilize(z))`` with ``z`` the layer's own output, so the forward pass's
    output is kept and, for the layers below, the vector-Jacobian product is taken directly instead of running the
    layer again under autograd; any other layer falls back to the general lean step (same numbers either way).
    ``stabilizer`` is the rule's (epsilon's ``epsilon``)."""

    stabilizer: float

    def post_forward(self, module: nn.Module, input: tuple, output: Tensor) -> Tensor | None:  # noqa: A002
        self.stored_tensors["output"] = output.detach()
        return super().post_forward(module, input, output)

    def _input_gradient(self, module: nn.Module, original: Tensor) -> Callable[[Tensor], Tensor] | None:
        """The layer's vector-Jacobian product with respect to its input, where it is one cheap operation."""
        if isinstance(module, nn.Linear) and original.dim() == 2:  # dense layer: one matrix product
            weight = module.weight.detach()
            return lambda scaled: scaled.mm(weight)
        if isinstance(module, Sum):  # residual sum: the same gradient for every summand
            return lambda scaled: scaled.unsqueeze(module.dim).expand_as(original)
        return None

    def relevance(self, module: nn.Module, out_grad: Tensor) -> Tensor:
        original = self.stored_tensors["input"][0]
        backward = self._input_gradient(module, original)
        if backward is None:
            return super().relevance(module, out_grad)
        self._check_version(module)
        output, epsilon = self.stored_tensors["output"], _number(self.stabilizer)
        if epsilon is None:  # a callable stabiliser: the rule's own mapper
            scaled = self.gradient_mapper(out_grad, [output])
        else:  # the rule's ``R / stabilize(z)`` in one new tensor
            denominator = stabilized(output, epsilon)
            scaled = torch.div(out_grad, denominator, out=denominator)
        return original.detach() * backward(scaled)


class LeanEpsilon(_ReusesOutput, Epsilon):
    """zennit's ``Epsilon`` rule, lean; on a dense layer it reuses the forward output (on VGG's 25088 x 4096
    classifier, running the layer again re-reads 400 MB of weights per batch)."""

    def __init__(self, epsilon: float = 1e-6, zero_params: list[str] | None = None) -> None:
        Epsilon.__init__(self, epsilon=epsilon, zero_params=zero_params)
        self.stabilizer = epsilon
        self.zero_params = zero_params

    def copy(self) -> LeanEpsilon:
        return LeanEpsilon(self.stabilizer, self.zero_params)

    def _input_gradient(self, module: nn.Module, original: Tensor) -> Callable[[Tensor], Tensor] | None:
        return None if self.zero_params else super()._input_gradient(module, original)


class LeanNorm(_ReusesOutput, Norm):
    """zennit's ``Norm`` rule (residual sums, average pools), lean; on a residual ``Sum`` it reuses the forward output
    and hands every summand the same gradient instead of summing again under autograd."""

    def __init__(self, stabilizer: float = 1e-6) -> None:
        Norm.__init__(self, stabilizer=stabilizer)
        self.stabilizer = stabilizer

    def copy(self) -> LeanNorm:
        return LeanNorm(self.stabilizer)


class LeanPass(Hook):
    """zennit's ``Pass`` rule (relevance passes through unchanged, e.g. ReLU, merged BatchNorm) without running the
    layer's own backward. In-place layers get a copy of their input, as in zennit."""

    def pre_forward(self, module: nn.Module, input: tuple) -> tuple | None:  # noqa: A002 - zennit's signature
        args = _keep_source(self.stored_tensors, input)
        if args is None:
            return None
        detached = args[0].detach()
        return (detached.clone() if getattr(module, "inplace", False) else detached, *args[1:])

    def post_forward(self, module: nn.Module, input: tuple, output: Tensor) -> Tensor | None:  # noqa: A002
        source = self.stored_tensors.get("source")
        return None if source is None else _PassThrough.apply(source, output)


def lean_layer_map_base(stabilizer: float) -> list:
    """zennit's ``layer_map_base`` (activations and BatchNorm: pass; sums and average pools: norm) with lean hooks."""
    return [
        (Activation, LeanPass()),
        (Sum, LeanNorm(stabilizer)),
        (AvgPool, LeanNorm(stabilizer)),
        (BatchNorm, LeanPass()),
    ]


# ------------------------------------------------------------------------------------------------- ResNet canonizer


def _bottleneck_forward(self: nn.Module, x: Tensor) -> Tensor:
    """zennit's canonized Bottleneck forward, with the residual pair stacked on a leading dimension."""
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(self.canonizer_sum(torch.stack([identity, out], dim=0)))


def _basic_block_forward(self: nn.Module, x: Tensor) -> Tensor:
    """zennit's canonized BasicBlock forward, with the residual pair stacked on a leading dimension."""
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(self.canonizer_sum(torch.stack([identity, out], dim=0)))


class _StackFirstBottleneckCanonizer(ResNetBottleneckCanonizer):
    @classmethod
    def _attribute_map(cls, name: str, module: nn.Module) -> dict | None:
        if super()._attribute_map(name, module) is None:
            return None
        return {"forward": _bottleneck_forward.__get__(module), "canonizer_sum": Sum(dim=0)}


class _StackFirstBasicBlockCanonizer(ResNetBasicBlockCanonizer):
    @classmethod
    def _attribute_map(cls, name: str, module: nn.Module) -> dict | None:
        if super()._attribute_map(name, module) is None:
            return None
        return {"forward": _basic_block_forward.__get__(module), "canonizer_sum": Sum(dim=0)}


def lean_resnet_canonizer() -> CompositeCanonizer:
    """zennit's ``ResNetCanonizer`` with the residual sum over a leading stack dimension instead of the last one (a
    strided size-2 reduction over the last dimension is several times slower on CPU); the same relevance."""
    return CompositeCanonizer(
        (SequentialMergeBatchNorm(), _StackFirstBottleneckCanonizer(), _StackFirstBasicBlockCanonizer())
    )
