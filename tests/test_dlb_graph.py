"""DL-Backtrace rules per operation over the traced graph (medprune.scoring.dlb.graph): equal to the family walk where
both apply, relevance conserved where DLB's rules promise it, common CNN blocks scored, and a one-line refusal naming
an operation without a rule before any data is read."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision
from helpers import ConcatBlock, OneOp, ResidualBlock, SqueezeExcite, Swish
from torch import nn

import medprune.runs.score as score_module
from medprune.checkpoint import save_checkpoint
from medprune.models import create_model
from medprune.models.registry import register_model
from medprune.models.support import UnsupportedModelError, scorer_blocker
from medprune.models.units import unit_groups
from medprune.runs.score import ScoreConfig, run_score
from medprune.scoring.dlb import dlb_relevance
from medprune.scoring.dlb.graph import graph_blocker
from medprune.scoring.registry import score

TOTAL = 100.0


def _randomise_batchnorm(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                shape = module.num_features
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(shape, generator=generator) * 0.1)


def _assert_equal(ours: dict, reference: dict) -> None:
    assert ours.keys() == reference.keys()
    for name in reference:
        assert ours[name].shape == reference[name].shape, name
        scale = reference[name].abs().max().clamp_min(1e-12)
        assert float((ours[name] - reference[name]).abs().max() / scale) < 1e-9, name


@pytest.mark.parametrize("arch", ["vgg_small", "resnet_small"])
@pytest.mark.parametrize("start", ["target", "argmax"])
def test_graph_path_equals_the_family_path(arch: str, start: str) -> None:
    """Biases, BatchNorm statistics, max-pools, adaptive pooling, residual adds and downsample shortcuts included."""
    torch.manual_seed(0)
    model = create_model(arch, num_classes=3, image_size=32).double()
    _randomise_batchnorm(model)
    inputs, targets = torch.randn(3, 3, 32, 32, dtype=torch.float64), torch.tensor([0, 1, 2])
    reference = dlb_relevance(model, inputs, targets, start=start)
    ours = dlb_relevance(model, inputs, targets, start=start, walk="graph")
    _assert_equal(ours, reference)
    # the walks stop below the lowest requested group: a subset gives the same values
    groups = unit_groups(model)[-3:]
    subset = dlb_relevance(model, inputs, targets, groups, start=start, walk="graph")
    _assert_equal(subset, {g.name: reference[g.name] for g in groups})


def test_timm_resnet_is_scored_like_torchvision_resnet() -> None:
    """timm's ResNet (not a torchvision class, so no family walk) goes through the graph and, with the same weights,
    gives the torchvision family walk's relevance."""
    ours_model = timm.create_model("resnet18", pretrained=False, num_classes=2).eval()
    theirs = torchvision.models.resnet18(weights=None, num_classes=2).eval()
    _randomise_batchnorm(ours_model)
    theirs.load_state_dict(ours_model.state_dict())
    assert scorer_blocker(ours_model, "dlb") is None
    inputs, targets = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    reference = dlb_relevance(theirs, inputs, targets)
    ours = dlb_relevance(ours_model, inputs, targets)
    assert ours.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-5, atol=1e-6 * TOTAL)


class _Shuffle(nn.Module):
    """ShuffleNet's split, branch and channel shuffle (chunk, cat, view, transpose, contiguous)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        y = torch.cat((a, self.branch(b)), dim=1)
        n, c, h, w = y.shape
        return y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class _LayerScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(8, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * x + 0.1


OPERATIONS = {
    "relu6": lambda: nn.ReLU6(),
    "silu": lambda: nn.SiLU(),
    "gelu": lambda: nn.GELU(),
    "hardswish": lambda: nn.Hardswish(),
    "swish as x * sigmoid(x)": lambda: Swish(),
    "squeeze-excitation (sigmoid gate)": lambda: SqueezeExcite(8, nn.Sigmoid(), hidden=8),
    "squeeze-excitation (hardsigmoid gate)": lambda: SqueezeExcite(8, nn.Hardsigmoid(), hidden=8),
    "batchnorm (not merged)": lambda: nn.BatchNorm2d(8),
    "groupnorm": lambda: nn.GroupNorm(2, 8),
    "layernorm2d (timm)": lambda: timm.layers.LayerNorm2d(8),
    "layer scale and shift": lambda: _LayerScale(),
    "grouped conv": lambda: nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False),
    "depthwise conv": lambda: nn.Conv2d(8, 8, 3, padding="same", groups=8, bias=False),
    "residual add": lambda: ResidualBlock(),
    "concatenation": lambda: ConcatBlock(),
    "channel split and shuffle": lambda: _Shuffle(),
    "max pool": lambda: nn.MaxPool2d(3, stride=2, padding=1),
    "average pool": lambda: nn.AvgPool2d(2),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_relevance_is_conserved_through_each_operation(operation: str) -> None:
    """Without biases every DLB rule passes on all it receives (docs/dlb.md, Conservation): conv and linear exactly,
    pooling by its rescaling, an add or a product half to each operand (both halves come back to the stem), norms and
    activations unchanged, concatenation and reshapes by moving it. So the stem's units carry the start total."""
    torch.manual_seed(0)
    model = OneOp(OPERATIONS[operation]()).double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d | nn.GroupNorm | nn.LayerNorm):  # DLB ignores scale and shift
                module.weight.uniform_(-1.5, 1.5)
                module.bias.normal_()
    assert graph_blocker(model, 16) is None
    inputs, targets = torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.tensor([0, 1])
    relevance = dlb_relevance(model, inputs, targets)
    torch.testing.assert_close(
        relevance["stem"].sum(1), torch.full((2,), TOTAL, dtype=torch.float64), rtol=1e-9, atol=0
    )
    assert all(bool((r >= 0).all()) for r in relevance.values())  # DLB's magnitude rules never change sign


def test_a_product_gives_half_to_each_factor() -> None:
    """The package's Wt_mul: a squeeze-excitation gate is not a constant, its branch receives half (so its convs'
    units are scored, not all zero)."""
    torch.manual_seed(0)
    model = OneOp(SqueezeExcite(8, nn.Sigmoid(), hidden=8)).double().eval()
    relevance = dlb_relevance(model, torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.tensor([0, 1]))
    expected = torch.full((2,), TOTAL / 2, dtype=torch.float64)
    torch.testing.assert_close(relevance["middle.expand"].sum(1), expected, rtol=1e-9, atol=0)
    torch.testing.assert_close(relevance["middle.reduce"].sum(1), expected, rtol=1e-9, atol=0)


class _MobileBlock(nn.Module):
    """MobileNet-like: expand 1x1, BN, ReLU6, depthwise 3x3, BN, ReLU6, SE, project 1x1, BN; residual add."""

    def __init__(self, channels: int = 8, hidden: int = 24) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()
        )
        self.se = torchvision.ops.SqueezeExcitation(hidden, 8)
        self.project = nn.Sequential(nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.se(self.depthwise(self.expand(x))))


class _DenseBlock(nn.Module):
    """DenseNet-like: every layer sees the concatenation of all earlier feature maps."""

    def __init__(self, channels: int = 8, growth: int = 4, layers: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(channels + i * growth), nn.ReLU(), nn.Conv2d(channels + i * growth, growth, 3, padding=1)
            )
            for i in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class _Blocks(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6(inplace=True))
        self.mobile = _MobileBlock()
        self.dense = _DenseBlock()
        self.head = nn.Sequential(nn.BatchNorm2d(20), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(20, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.dense(self.mobile(self.stem(x)))))


def test_mobilenet_and_densenet_blocks_are_scored() -> None:
    torch.manual_seed(0)
    model = _Blocks().eval()
    _randomise_batchnorm(model)
    assert scorer_blocker(model, "dlb") is None
    groups = unit_groups(model)
    inputs, targets = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    scores = score(model, inputs, targets, "dlb")
    assert list(scores) == [g.name for g in groups]
    for group in groups:
        assert scores[group.name].shape == (group.num_units,), group.name
        assert bool(torch.isfinite(scores[group.name]).all()), group.name
    assert all(float(scores[g.name].sum()) > 0 for g in groups)  # every unit group is reached, gates included


@pytest.mark.parametrize("arch", ["torchvision:mobilenet_v3_small", "torchvision:squeezenet1_1"])
def test_common_architectures_get_finite_relevance(arch: str) -> None:
    model = create_model(arch, num_classes=2, image_size=32)
    assert scorer_blocker(model, "dlb") is None
    relevance = dlb_relevance(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert relevance.keys() == {g.name for g in unit_groups(model)}
    assert all(bool(torch.isfinite(r).all()) and bool((r >= 0).all()) for r in relevance.values())


class _Attention(nn.Module):
    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.stem(x).flatten(2).transpose(1, 2)
        weights = (tokens @ tokens.transpose(1, 2)).softmax(-1)
        return self.fc((weights @ tokens).mean(1))


_NAME = "test_dlb_graph_attention"
try:
    register_model(_NAME, family="other", min_image_size=8)(
        lambda num_classes, in_channels, image_size, pretrained: _Attention(num_classes)
    )
except ValueError:  # registered by an earlier import of this module
    pass


def test_an_operation_without_a_rule_is_refused_by_name() -> None:
    reason = graph_blocker(_Attention(), 16)
    assert reason is not None and "\n" not in reason and reason.startswith("no DLB rule for matmul")
    assert scorer_blocker(_Attention(), "dlb") == f"dlb (rules per operation): {reason}"


def test_score_refuses_before_any_data_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model(_NAME, num_classes=2, image_size=16)
    meta = {"class_names": ["normal", "pneumonia"], "dataset": {"name": "pneumoniamnist"}}
    path = str(save_checkpoint(tmp_path / "train" / "model", model, meta))

    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("data was loaded before the support check")

    monkeypatch.setattr(score_module, "load_with_splits", no_data)
    out = tmp_path / "scores"
    with pytest.raises(UnsupportedModelError, match=r"^dlb \(rules per operation\): no DLB rule for matmul") as error:
        run_score(ScoreConfig(checkpoint=path, methods=["dlb"], out=str(out)))
    assert "\n" not in str(error.value)
    assert not out.exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["blocks", "torchvision:mobilenet_v3_small", "torchvision:densenet121"])
def test_graph_path_on_cuda_matches_cpu(name: str) -> None:
    """In float64, so that the comparison checks the walk, not float32 rounding (CUDA convolutions run in TF32 by
    default: on an H200 float32 groups of DenseNet-121 differed from the CPU by up to 1.5e-3 of their largest unit,
    2.2e-6 with TF32 off).
    Even in float64 a unit fed only by near-zero activations (hardswish just above -3) gets its share from values
    computed with cancellation: MobileNetV3 differed by 2.6e-8 of the largest unit, hence the tolerance."""
    torch.manual_seed(0)
    model = _Blocks().eval() if name == "blocks" else create_model(name, num_classes=3, image_size=32)
    _randomise_batchnorm(model)
    model = model.double()
    x, y = torch.randn(2, 3, 32, 32, dtype=torch.float64), torch.tensor([0, 1])
    cpu = dlb_relevance(model, x, y)
    gpu = dlb_relevance(model.cuda(), x.cuda(), y.cuda())
    assert gpu.keys() == cpu.keys()
    for group, r in cpu.items():
        assert gpu[group].is_cuda and gpu[group].dtype == torch.float64
        torch.testing.assert_close(gpu[group].cpu(), r, rtol=1e-5, atol=1e-6 * r.abs().max().item())
