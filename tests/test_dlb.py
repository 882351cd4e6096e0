"""Native DL-Backtrace: hand-computed examples, literal transcriptions of the package's loops, conservation, contract.

Parity with the package itself is in test_dlb_oracle.py (opt-in). Everything here runs in the main venv in seconds.
"""

from __future__ import annotations

import pytest
import torch
from helpers import has_hooks
from torch import nn

from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.scoring.dlb import dlb_relevance
from medprune.scoring.dlb.rules import align_rule, attention_rule, conv2d_rule, linear_rule
from medprune.scoring.registry import score

#: float64 tolerance for "conserved": relative error of totals (only float rounding remains)
CONSERVE_RTOL = 1e-9


def _mlp() -> nn.Module:
    """A 2-2-2 MLP with hand-set weights, as a torchvision VGG without conv layers (input (1, 2, 1, 1))."""
    import torchvision

    model = torchvision.models.VGG(nn.Sequential(), num_classes=2, init_weights=False)
    model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    model.classifier = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        model.classifier[0].weight.copy_(torch.tensor([[1.0, 1.0], [2.0, -0.5]]))
        model.classifier[0].bias.copy_(torch.tensor([0.5, 0.0]))
        model.classifier[2].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 1.0]]))
        model.classifier[2].bias.copy_(torch.tensor([1.0, 0.0]))
    return model.double().eval()


MLP_INPUT = torch.tensor([1.0, 2.0], dtype=torch.float64).view(1, 2, 1, 1)


def test_hand_computed_mlp_target_class():
    # hidden h = relu([1+2+0.5, 2-1]) = [3.5, 1]; logits = [3.5-2+1, 1.75+1] = [2.5, 2.75]
    # class 0: contributions [3.5, -2], P=3.5, N=2, |b|=1 -> R_h = 100 * [3.5, 2] / 6.5
    rel = dlb_relevance(_mlp(), MLP_INPUT, torch.tensor([0]))
    torch.testing.assert_close(rel["classifier.0"], torch.tensor([[350 / 6.5, 200 / 6.5]], dtype=torch.float64))


def test_hand_computed_mlp_argmax_and_the_packages_zero_sum_guard():
    # argmax = class 1: contributions [1.75, 1] are all positive, N=0 -> the package's guard uses N'=1:
    # denominator 2.75 + 1 + |0| = 3.75, so R_h = 100 * [1.75, 1] / 3.75 (a quarter of the relevance is lost)
    rel = dlb_relevance(_mlp(), MLP_INPUT, start="argmax")
    torch.testing.assert_close(rel["classifier.0"], torch.tensor([[175 / 3.75, 100 / 3.75]], dtype=torch.float64))


def test_hand_computed_linear_rule_to_the_input():
    layer = _mlp().classifier[0]
    x = MLP_INPUT.view(1, 2)
    r_h = torch.tensor([[350 / 6.5, 200 / 6.5]], dtype=torch.float64)
    # unit 0: z = [1, 2], P=3, N=0 -> 1, |b|=0.5: denom 4.5; unit 1: z = [2, -1], P=2, N=1: denom 3
    want = torch.tensor([[r_h[0, 0] / 4.5 + 2 * r_h[0, 1] / 3, 2 * r_h[0, 0] / 4.5 + r_h[0, 1] / 3]])
    got = linear_rule(r_h, x, layer.weight, layer.bias, layer(x))
    torch.testing.assert_close(got, want.double())


def _package_conv_loop(r, x, w, b, stride, padding):
    """Literal transcription of the package's ``calculate_wt_conv`` + ``calculate_wt_conv_unit`` (act "None")."""
    xp = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    out = torch.zeros_like(xp)
    kh, kw = w.shape[2:]
    for n in range(r.shape[0]):
        for i in range(r.shape[2]):
            for j in range(r.shape[3]):
                patch = xp[n, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
                z = w * patch  # (O, C, kh, kw)
                p = z.clamp_min(0).sum(dim=(1, 2, 3))
                q = -z.clamp_max(0).sum(dim=(1, 2, 3))
                denom = p + q + b.abs()
                denom = torch.where(denom == 0, torch.full_like(denom, 1e-12), denom)
                wt = r[n, :, i, j] / denom
                upd = (z.clamp_min(0) * (wt * (p > 0)).view(-1, 1, 1, 1)) - (
                    z.clamp_max(0) * (wt * (q > 0)).view(-1, 1, 1, 1)
                )
                out[n, :, i * stride : i * stride + kh, j * stride : j * stride + kw] += upd.sum(0)
    return out[:, :, padding : padding + x.shape[2], padding : padding + x.shape[3]]


@pytest.mark.parametrize(("stride", "padding"), [(1, 0), (2, 1), (1, 1)])
def test_conv_rule_equals_the_packages_loop(stride, padding):
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(2, 3, 7, 7, generator=g), torch.randn(4, 3, 3, 3, generator=g), torch.randn(4, generator=g)
    x, w, b = x.double(), w.double(), b.double()
    h_out = (7 + 2 * padding - 3) // stride + 1
    r = torch.rand(2, 4, h_out, h_out, generator=g).double()
    got = conv2d_rule(r, x, w, b, (stride, stride), (padding, padding))
    torch.testing.assert_close(got, _package_conv_loop(r, x, w, b, stride, padding))


def _package_attention(r, q, k, v, eps=1e-9):
    """Literal transcription of ``calculate_wt_self_attention`` + ``dlb_style_signed_conserve`` (no mask)."""

    def stab(m):
        return torch.where(m.abs() < eps, eps * torch.where(m < 0, -1.0, 1.0).to(m), m)

    def conserve(wts, inp):
        def nonneg(w):
            p = inp.clamp_min(0).sum(dim=(-2, -1), keepdim=True)
            n = -inp.clamp_max(0).sum(dim=(-2, -1), keepdim=True)
            denom, mass = p + n + 1e-12, w.abs().sum(dim=(-2, -1), keepdim=True)
            pos = torch.where(inp > 0, inp / torch.where(p == 0, 1.0, p) * (p / denom) * mass, 0.0)
            return pos + torch.where(inp < 0, inp / torch.where(n == 0, 1.0, n) * (n / denom) * mass * -1.0, 0.0)

        return nonneg(wts.clamp_min(0)) - nonneg((-wts).clamp_min(0))

    qk = q @ k.transpose(-2, -1)
    logits = qk / q.shape[-1] ** 0.5
    a = torch.exp(logits - logits.amax(-1, keepdim=True))
    a = a / (a.sum(-1, keepdim=True) + eps)
    rn = r / stab(a @ v * 2)
    r_qk = (rn @ v.transpose(-2, -1)) * a
    r_v = conserve((a.transpose(-2, -1) @ rn) * v, v)
    rn_qk = r_qk / stab(qk * 2)
    r_q = conserve((rn_qk @ k) * q, q)
    r_k = conserve((q.transpose(-2, -1) @ rn_qk).transpose(-2, -1) * k, k)
    return r_q, r_k, r_v


def test_attention_rule_closed_form_equals_the_packages_steps_and_conserves():
    g = torch.Generator().manual_seed(1)
    r, q, k, v = (torch.randn(2, 3, 5, 4, generator=g).double() for _ in range(4))
    ours = attention_rule(r, q, k, v)
    for got, want in zip(ours, _package_attention(r, q, k, v)):
        torch.testing.assert_close(got, want)
    # conservation implied by the rule: V gets sum(R)/2, Q and K a quarter each, per (sample, head)
    per_head = r.sum(dim=(-2, -1))
    torch.testing.assert_close(ours[2].sum(dim=(-2, -1)), per_head / 2)
    torch.testing.assert_close((ours[0] + ours[1]).sum(dim=(-2, -1)), per_head / 2)


def test_rule_level_conservation_is_exactly_the_bias_share():
    g = torch.Generator().manual_seed(2)
    x, w, b, r = (torch.randn(*s, generator=g).double() for s in [(3, 8), (5, 8), (5,), (3, 5)])
    magnitude = x.abs() @ w.abs().T
    got = linear_rule(r, x, w, b, x @ w.T + b).sum()
    torch.testing.assert_close(got, (r * magnitude / (magnitude + b.abs())).sum(), rtol=CONSERVE_RTOL, atol=0)
    xc, wc, bc = torch.randn(2, 3, 6, 6, generator=g).double(), torch.randn(4, 3, 3, 3, generator=g).double(), None
    rc = torch.rand(2, 4, 6, 6, generator=g).double()
    torch.testing.assert_close(conv2d_rule(rc, xc, wc, bc, (1, 1), (1, 1)).sum(), rc.sum(), rtol=CONSERVE_RTOL, atol=0)
    for src, dst in [((2, 3, 2, 2), (2, 3, 4, 4)), ((2, 3, 3, 3), (2, 3, 7, 7)), ((2, 3, 7, 7), (2, 3, 1, 1))]:
        ra = torch.rand(*src, generator=g).double()
        torch.testing.assert_close(align_rule(ra, dst).flatten(1).sum(1), ra.flatten(1).sum(1))
    pooled = align_rule(torch.tensor([[[[4.0]]]]), (1, 1, 2, 2))  # global pooling: uniform spread
    torch.testing.assert_close(pooled, torch.ones(1, 1, 2, 2))


def _zero_biases(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear) and module.bias is not None:
                module.bias.zero_()
    return model


@pytest.mark.parametrize("name", ["vgg_small", "resnet_small", "vit_small"])
def test_model_level_conservation_without_biases(name):
    """Biases zero: every rule conserves, so each unit group carries the start total, halved per residual add."""
    torch.manual_seed(0)
    model = _zero_biases(create_model(name, num_classes=3, image_size=16)).double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    rel = dlb_relevance(model, x, torch.tensor([0, 2]))
    for group_name, r in rel.items():
        block_conv = name == "resnet_small" and group_name.startswith("layer")
        want = 50.0 if block_conv or name == "vit_small" else 100.0
        torch.testing.assert_close(r.sum(1), torch.full((2,), want, dtype=torch.float64), rtol=CONSERVE_RTOL, atol=0)


MODELS = [("vgg_small", 32), ("resnet_small", 16), ("vit_small", 16), ("resnet50", 16)]  # resnet50: Bottleneck


@pytest.mark.parametrize(("name", "size"), MODELS, ids=[m for m, _ in MODELS])
def test_contract_shapes_finite_deterministic_batch_invariant_no_hooks(name, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, image_size=size)
    x, y = torch.randn(2, 3, size, size), torch.tensor([0, 2])
    groups = unit_groups(model)
    first = dlb_relevance(model, x, y, groups)
    again = dlb_relevance(model, x, y, groups)
    singles = [dlb_relevance(model, x[i : i + 1], y[i : i + 1], groups) for i in range(2)]
    assert not has_hooks(model)
    assert set(first) == {g.name for g in groups}
    for g in groups:
        assert first[g.name].shape == (2, g.num_units)
        assert torch.isfinite(first[g.name]).all()
        assert torch.equal(first[g.name], again[g.name])
        stacked = torch.cat([s[g.name] for s in singles])
        torch.testing.assert_close(first[g.name], stacked, rtol=1e-4, atol=1e-5 * first[g.name].abs().max().item())


def test_no_global_torch_state_changed_and_no_hooks_after_an_exception():
    model = create_model("resnet_small", num_classes=2, image_size=16)
    before = (
        torch.get_num_threads(),
        torch.backends.mkldnn.enabled,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_grad_enabled(),
        torch.get_default_dtype(),
    )
    dlb_relevance(model, torch.randn(2, 3, 16, 16), torch.tensor([0, 1]))
    with pytest.raises(RuntimeError):
        dlb_relevance(model, torch.randn(1, 5, 16, 16), torch.tensor([0]))  # fails inside the recorded forward
    after = (
        torch.get_num_threads(),
        torch.backends.mkldnn.enabled,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_grad_enabled(),
        torch.get_default_dtype(),
    )
    assert before == after
    assert not has_hooks(model)


def test_start_options_and_registry():
    torch.manual_seed(0)
    model = create_model("vgg_small", num_classes=3, image_size=16)
    x = torch.randn(4, 3, 16, 16)
    predicted = model(x).argmax(1)
    by_argmax = dlb_relevance(model, x, start="argmax")
    by_target = dlb_relevance(model, x, predicted)
    doubled = dlb_relevance(model, x, predicted, total=200.0)
    for name in by_argmax:
        torch.testing.assert_close(by_argmax[name], by_target[name])
        torch.testing.assert_close(doubled[name], 2 * by_target[name])
    totals = score(model, x, predicted, "dlb", batch_size=3)
    torch.testing.assert_close(totals["features.0"], by_target["features.0"].double().sum(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="start must be one of"):
        dlb_relevance(model, x, predicted, start="max")
    with pytest.raises(ValueError, match="unknown option"):
        score(model, x, predicted, "dlb", rule="z")


def test_unsupported_model_is_refused_clearly():
    """Outside the family walks a model goes through the traced graph (tests/test_dlb_graph.py); an operation without
    a DLB rule is refused by name, leaving no hook behind."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softmax(dim=1), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    with pytest.raises(NotImplementedError, match="no DLB rule for module Softmax at '1'"):
        dlb_relevance(model, torch.randn(1, 3, 32, 32), torch.tensor([0]))
    assert not has_hooks(model)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["resnet_small", "vit_small"])
def test_cuda_matches_cpu(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, image_size=32)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    cpu = dlb_relevance(model, x, y)
    gpu = dlb_relevance(model.cuda(), x.cuda(), y.cuda())
    for name_, r in cpu.items():
        assert gpu[name_].is_cuda
        torch.testing.assert_close(gpu[name_].cpu(), r, rtol=1e-3, atol=1e-4 * r.abs().max().item())
