"""fold_batchnorms: the same eval-mode outputs with the BatchNorms moved into their convolutions; only exact pairs."""

from __future__ import annotations

import functools

import pytest
import torch
from timm.layers import BatchNormAct2d
from torch import nn

from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.pruning.export import export_onnx, run_onnx
from medprune.pruning.folding import FoldedNormAct, batchnorm_pairs, fold_batchnorms
from medprune.pruning.masks import masks_from_scores
from medprune.pruning.physical import apply_structure, coupled_groups, remove_units

#: float32 models with outputs of size ~1: folding reorders a few products and sums per channel.
ATOL = 2e-5


def _randomise_norms(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics, scales and shifts (a freshly built model's are 0 / 1)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@functools.cache
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = _randomise_norms(create_model(name, num_classes=3, image_size=32))
    if name == "vgg_small":  # classifier initialised at std 0.01: scale up so outputs are O(1)
        for module in model.classifier:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.2)
    return model


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _max_difference(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


@pytest.mark.parametrize("name", ["resnet_small", "vgg_small"])
def test_folded_model_has_no_batchnorm_and_the_same_outputs(name: str) -> None:
    model = _model(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorms(model)
    assert _norms(model) > 0 and _norms(folded) == 0
    assert len(folded.medprune_folded) == _norms(model)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert float(model(x).abs().max()) > 0.1  # outputs of size ~1, so ATOL is a relative bound too
    assert _max_difference(model, folded, x) < ATOL
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input is not changed
    assert folded.medprune_spec == model.medprune_spec


def test_pruned_model_folds_and_a_checkpoint_of_it_is_rebuilt_by_folding_the_shrunk_architecture() -> None:
    model = _model("resnet_small")
    scores = {g.name: torch.randn(g.num_units, generator=torch.Generator().manual_seed(1)) for g in unit_groups(model)}
    masks = masks_from_scores(scores, 0.5, couplings=coupled_groups(model))
    small = remove_units(model, masks)
    folded = fold_batchnorms(small)
    x = torch.randn(3, 3, 32, 32)
    assert _max_difference(small, folded, x) < ATOL
    assert folded.medprune_pruned == small.medprune_pruned
    fresh = create_model("resnet_small", num_classes=3, image_size=32)
    rebuilt = fold_batchnorms(apply_structure(fresh, folded.medprune_pruned))
    rebuilt.load_state_dict(folded.state_dict())  # strict: the same keys and shapes
    assert _max_difference(rebuilt, folded, x) == 0.0


def test_timm_batchnorm_act_keeps_its_activation() -> None:
    torch.manual_seed(0)
    model = _randomise_norms(
        nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), BatchNormAct2d(8, act_layer=nn.SiLU), nn.Conv2d(8, 4, 1))
    )
    folded = fold_batchnorms(model)
    assert isinstance(folded[1], FoldedNormAct) and isinstance(folded[1].act, nn.SiLU)
    assert _max_difference(model, folded, torch.randn(2, 3, 9, 9)) < ATOL


class _Branch(nn.Module):
    """The conv's output feeds the BatchNorm and a second branch: folding would change the second branch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


class _Shared(nn.Module):
    """One conv called twice, followed once by a BatchNorm: its weights serve the unnormalised call too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.conv(x)))


class _OddNorm(nn.BatchNorm2d):
    """A BatchNorm subclass whose forward does more than normalise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return self.bn(self.conv(x))
        return self.bn(self.conv(-x))


@pytest.mark.parametrize(
    "model",
    [
        _Branch(),
        _Shared(),
        nn.Sequential(nn.Conv2d(4, 4, 1), _OddNorm(4)),
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)),
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU(), nn.BatchNorm2d(4)),
        _Untraceable(),
    ],
    ids=["branch", "shared-conv", "subclass", "no-running-stats", "not-adjacent", "untraceable"],
)
def test_pairs_that_would_not_be_exact_are_left_alone(model: nn.Module) -> None:
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and module.track_running_stats:
            _randomise_norms(module)
    model.eval()
    assert batchnorm_pairs(model) == []
    folded = fold_batchnorms(model)
    assert folded.medprune_folded == [] and _norms(folded) == _norms(model)
    x = torch.randn(2, 4, 6, 6)
    assert _max_difference(model, folded, x) == 0.0


def test_folded_model_exports_to_onnx(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    folded = fold_batchnorms(_model("vgg_small"))
    x = torch.randn(2, 3, 32, 32)
    path = export_onnx(folded, tmp_path / "folded.onnx", x[:1])
    with torch.no_grad():
        assert float((run_onnx(path, x) - folded(x)).abs().max()) < 1e-4
