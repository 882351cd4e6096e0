"""Issue 25: physical removal for the parts of a model it can shrink exactly (removal_plan).

Tiny stand-ins for the architectures the support matrix runs at full size: a ConvNeXt-like model (LayerNorm'd residual
channels kept whole, MLP hidden units removed), a DenseNet-like one (concatenated outputs kept whole, bottleneck
units removed) and a RegNet-like one (grouped convolution with a squeeze-excitation gate: channels removed as many
per conv group). Every removal is compared with the masked model in float64, with BatchNorm statistics and shifts
that make a wrongly kept or dropped constant visible.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from medprune.checkpoint import load_checkpoint, read_meta, save_checkpoint
from medprune.compression.floor import ranked_candidate
from medprune.models import create_model
from medprune.models.registry import register_model
from medprune.models.support import UnsupportedModelError
from medprune.models.units import unit_groups
from medprune.pruning import mask_model, masks_from_scores, pruned_structure, remove_units
from medprune.pruning.masks import achieved_rate
from medprune.pruning.physical import (
    MIN_REMOVABLE_SHARE,
    apply_structure,
    check_compressible,
    prune_grouped_inputs,
    removal_plan,
)

INPUTS = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


class _LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (as torchvision's / timm's LayerNorm2d)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ConvNeXtLike(nn.Module):
    """stem conv -> LayerNorm2d -> [depthwise conv -> LayerNorm -> fc1 -> GELU -> fc2 -> scale] + residual -> head."""

    def __init__(self, width: int = 8, hidden: int = 32) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 2, stride=2)
        self.stem_norm = _LayerNorm2d(width)
        self.dwconv = nn.Conv2d(width, width, 7, padding=3, groups=width)
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.scale = nn.Parameter(torch.rand(width) + 0.5)
        self.head_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem_norm(self.stem(x))
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.fc2(nn.functional.gelu(self.fc1(y))) * self.scale
        x = x + y.permute(0, 3, 1, 2)
        return self.head(self.head_norm(x.mean((2, 3))))


class _DenseLayer(nn.Module):
    def __init__(self, channels: int, bottleneck: int = 16, growth: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, bottleneck, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bottleneck)
        self.conv2 = nn.Conv2d(bottleneck, growth, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(torch.relu(self.norm1(x)))
        return torch.cat([x, self.conv2(torch.relu(self.norm2(y)))], 1)


class _DenseNetLike(nn.Module):
    """conv0 -> norm0 -> two dense layers (BN-ReLU-conv1x1-BN-ReLU-conv3x3, concatenated) -> norm5 -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.norm0 = nn.BatchNorm2d(8)
        self.layer1 = _DenseLayer(8)
        self.layer2 = _DenseLayer(12)
        self.norm5 = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer2(self.layer1(torch.relu(self.norm0(self.conv0(x)))))
        return self.head(torch.relu(self.norm5(x)).mean((2, 3)))


class _RegNetLike(nn.Module):
    """conv a -> BN -> grouped conv b (4 groups) -> BN -> squeeze-excitation gate -> conv c -> BN -> head."""

    def __init__(self, groups: int = 4) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1, bias=False)
        self.a_bn = nn.BatchNorm2d(16)
        self.b = nn.Conv2d(16, 16, 3, padding=1, groups=groups, bias=False)
        self.b_bn = nn.BatchNorm2d(16)
        self.se1 = nn.Conv2d(16, 4, 1)
        self.se2 = nn.Conv2d(4, 16, 1)
        self.c = nn.Conv2d(16, 8, 1, bias=False)
        self.c_bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.a_bn(self.a(x)))
        x = torch.relu(self.b_bn(self.b(x)))
        x = x * torch.sigmoid(self.se2(torch.relu(self.se1(x.mean((2, 3), keepdim=True)))))
        return self.head(torch.relu(self.c_bn(self.c(x))).mean((2, 3)))


def _ready(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    model = model.double()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-1, 1)
    return model.eval()


def _scores(model: nn.Module, seed: int) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {g.name: torch.randn(g.num_units, generator=generator) for g in unit_groups(model)}


def _removed_equals_masked(model: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
    small = remove_units(model, masks, example_inputs=INPUTS)
    with torch.no_grad():
        reference = mask_model(model, masks)(INPUTS)
        assert torch.allclose(small(INPUTS), reference, rtol=0, atol=1e-10), (small(INPUTS) - reference).abs().max()
        assert not torch.allclose(reference, model(INPUTS), atol=1e-6)  # the masks changed the outputs
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    return small


CASES = [(0.3, 0, "global"), (0.5, 1, "layer"), (0.8, 2, "global"), (0.9, 3, "layer")]


def test_convnext_like_keeps_layernormed_channels_whole_and_removes_mlp_units_exactly() -> None:
    model = _ready(_ConvNeXtLike())
    plan = removal_plan(model, example_inputs=INPUTS)
    assert sorted(plan.fixed) == ["dwconv", "fc2", "stem"]
    assert all("LayerNorm" in reason and "\n" not in reason for reason in plan.fixed.values())
    assert plan.removable_units == 32 and plan.removable_share == pytest.approx(32 / 56)
    for rate, seed, scope in CASES:
        masks = masks_from_scores(_scores(model, seed), rate, scope=scope, **plan.mask_keywords())
        assert all(bool(masks[name].all()) for name in plan.fixed)
        assert achieved_rate(masks, exclude=plan.fixed) == pytest.approx(rate, abs=1 / 32)
        assert achieved_rate(masks) == pytest.approx(achieved_rate(masks, exclude=plan.fixed) * 32 / 56)
        small = _removed_equals_masked(model, masks)
        assert small.fc1.out_features == small.fc2.in_features == int(masks["fc1"].sum())


def test_densenet_like_keeps_concatenated_outputs_whole_and_removes_bottlenecks_exactly() -> None:
    model = _ready(_DenseNetLike())
    plan = removal_plan(model, example_inputs=INPUTS)
    assert sorted(plan.fixed) == ["conv0", "layer1.conv2", "layer2.conv2"]
    assert "BatchNorm2d at 'layer1.norm1' does not directly follow" in plan.fixed["conv0"]
    for rate, seed, scope in CASES:
        masks = masks_from_scores(_scores(model, seed), rate, scope=scope, **plan.mask_keywords())
        small = _removed_equals_masked(model, masks)
        assert small.layer2.norm2.num_features == int(masks["layer2.conv1"].sum())
    # a concatenated channel's constant after BatchNorm + ReLU has no physical equivalent: masks dropping it refuse
    masks = {g.name: torch.ones(g.num_units, dtype=torch.bool) for g in unit_groups(model)}
    masks["conv0"][0] = False
    with pytest.raises(UnsupportedModelError, match=r"^physical removal of units of 'conv0': BatchNorm2d at"):
        remove_units(model, masks, example_inputs=INPUTS)


def test_grouped_convolution_channels_are_removed_as_many_per_group_exactly() -> None:
    model = _ready(_RegNetLike())
    plan = removal_plan(model, example_inputs=INPUTS)
    assert plan.fixed == {}
    assert plan.balanced == {"a": 4, "b": 4, "se2": 4}  # b's outputs and the gate that multiplies them
    assert ["b", "se2"] in plan.couplings
    for rate, seed, scope in [*CASES, (0.99, 4, "global"), (0.99, 5, "layer")]:
        masks = masks_from_scores(_scores(model, seed), rate, scope=scope, **plan.mask_keywords())
        for name in ("a", "b"):
            kept = masks[name].reshape(4, 4).sum(1)
            assert bool((kept == kept[0]).all()) and int(kept[0]) >= 1, (name, kept)  # equal, never emptied
        small = _removed_equals_masked(model, masks)
        per_group_in, per_group_out = int(masks["a"].sum()) // 4, int(masks["b"].sum()) // 4
        assert tuple(small.b.weight.shape[:2]) == (4 * per_group_out, per_group_in) and small.b.groups == 4
    # a saved structure rebuilds the same shapes (how a compressed checkpoint is loaded without pickle)
    rebuilt = apply_structure(model, pruned_structure(model, masks), example_inputs=INPUTS)
    rebuilt.load_state_dict(small.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(rebuilt(INPUTS), small(INPUTS))


def test_unbalanced_masks_on_a_grouped_convolution_are_refused_by_name() -> None:
    model = _ready(_RegNetLike())
    masks = {g.name: torch.ones(g.num_units, dtype=torch.bool) for g in unit_groups(model)}
    masks["a"][[0, 1, 4]] = False  # two from the first conv group, one from the second
    with pytest.raises(UnsupportedModelError, match=r"units of 'a': their channels are split into 4 equal groups"):
        remove_units(model, masks, example_inputs=INPUTS)


def test_grouped_inputs_are_gathered_group_by_group() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 3, padding=1, groups=2).double()
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    drop = [1, 2, 4]  # no: 2 from the first group, 1 from the second
    with pytest.raises(ValueError, match="as many from each group"):
        prune_grouped_inputs(nn.Conv2d(8, 6, 3, groups=2), drop)
    drop = [0, 2, 5, 7]  # positions 0, 2 of group 0 and 1, 3 of group 1: different local positions
    zeroed = x.clone()
    zeroed[:, drop] = 0
    with torch.no_grad():
        expected = conv(zeroed)
        keep = [c for c in range(8) if c not in drop]
        small = prune_grouped_inputs(conv, drop)
        assert small.in_channels == 4 and tuple(small.weight.shape) == (6, 2, 3, 3)
        assert torch.allclose(small(x[:, keep]), expected, atol=1e-12)


class _MostlyNormalised(nn.Module):
    """40 LayerNorm'd channels around a 2-unit bottleneck: under 10 % of the units removable."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 40, 1)
        self.norm_a = _LayerNorm2d(40)
        self.b = nn.Conv2d(40, 2, 1)
        self.c = nn.Conv2d(2, 40, 1)
        self.norm_c = _LayerNorm2d(40)
        self.head = nn.Linear(40, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm_a(self.a(x))
        x = self.norm_c(self.c(torch.relu(self.b(x))))
        return self.head(x.mean((2, 3)))


def test_compress_check_refuses_only_when_a_negligible_share_is_removable() -> None:
    check_compressible(_ready(_ConvNeXtLike()), "magnitude", example_inputs=INPUTS)  # 57 % removable: accepted
    with pytest.raises(UnsupportedModelError) as error:
        check_compressible(_ready(_MostlyNormalised()), "magnitude", example_inputs=INPUTS)
    message = str(error.value)
    assert "\n" not in message and "LayerNorm2d at 'norm_a'" in message
    assert f"only 2 of 82 units, 2.4%, can be removed exactly; compress needs at least {MIN_REMOVABLE_SHARE:.0%}" in (
        message
    )


def test_fixed_groups_are_kept_and_the_floor_counts_only_removable_units() -> None:
    scores = {"a": torch.arange(10.0), "b": torch.arange(10.0) + 100, "c": torch.arange(4.0)}
    candidate = ranked_candidate(scores, 0.5, meter=None, fixed=["a"], couplings=[["a", "c"]])
    assert bool(candidate.masks["a"].all()) and bool(candidate.masks["c"].all())  # c is coupled to a fixed group
    assert int((~candidate.masks["b"]).sum()) == 5 and candidate.unit_rate == 0.5


# A registered ConvNeXt-like model through `medprune compress` end to end (random init: mechanics only).
_NAME = "test_removal_plan_convnext_like"
try:
    register_model(_NAME, family="other", min_image_size=8)(
        lambda num_classes, in_channels, image_size, pretrained: _ConvNeXtLike()
    )
except ValueError:  # registered by an earlier import of this module
    pass


def test_compress_keeps_fixed_groups_whole_and_records_why(tmp_path: Path, data_root: Path) -> None:
    from medprune.runs.compress import compress

    torch.manual_seed(0)
    model = create_model(_NAME, num_classes=2, image_size=28)
    meta = {"class_names": ["normal", "pneumonia"], "dataset": {"name": "pneumoniamnist"}}
    checkpoint = str(save_checkpoint(tmp_path / "train" / "model", model, meta))
    result = compress(
        checkpoint,
        out=str(tmp_path / "compress"),
        data_root=str(data_root),
        method="magnitude",
        rates=[0.5],
        metric="accuracy",
        tolerance=0.99,
        decision_rule="point",
        max_class_recall_drop=1.0,
        search_recovery="recalibrate",
        finetune_epochs=0,
        max_train_samples=16,
        recalibration_samples=16,
        batch_size=16,
        latency_repeats=1,
    )
    assert all(bool(result.masks[name].all()) for name in ("stem", "dwconv", "fc2"))
    assert int((~result.masks["fc1"]).sum()) == 16  # half of the 32 removable units
    recorded = read_meta(result.files["weights"])["compression"]
    assert recorded["achieved_rate"] == 0.5 and recorded["achieved_rate_all_units"] == pytest.approx(16 / 56)
    assert sorted(recorded["removal"]["fixed groups"]) == ["dwconv", "fc2", "stem"]
    small, _ = load_checkpoint(result.files["weights"])
    assert small.fc1.out_features == 16


def test_prune_physical_output_keeps_fixed_groups_whole_and_matches_masking(tmp_path: Path, data_root: Path) -> None:
    from medprune.config import build_config
    from medprune.runs.prune import PruneConfig, run_prune

    torch.manual_seed(0)
    model = create_model(_NAME, num_classes=2, image_size=28)
    meta = {"class_names": ["normal", "pneumonia"], "dataset": {"name": "pneumoniamnist"}}
    checkpoint = str(save_checkpoint(tmp_path / "train" / "model", model, meta))
    overrides = {"checkpoint": checkpoint, "out": str(tmp_path / "prune"), "data_root": str(data_root)}
    # at 0.7 of all units a global ranking takes LayerNorm'd channels too, which physical removal must refuse
    config = build_config(PruneConfig, overrides={**overrides, "method": "magnitude", "rate": 0.7, "output": "both"})
    result = run_prune(config)
    # before: a ConvNeXt-like model's LayerNorm'd channels made physical removal refuse the whole model
    assert result.physical["accuracy"] == result.masked["accuracy"] == result.reloaded_accuracy
    recorded = read_meta(result.checkpoint)["pruning"]
    assert sorted(recorded["removal"]["fixed groups"]) == ["dwconv", "fc2", "stem"]
    small, _ = load_checkpoint(result.checkpoint)
    assert small.fc1.out_features == 32 - round(0.7 * 32) and small.stem.out_channels == model.stem.out_channels


def test_a_sweeps_physical_artefacts_use_the_removal_plan(tmp_path: Path) -> None:
    from medprune.config import build_config
    from medprune.sweep.artifacts import SweepModel
    from medprune.sweep.config import SweepConfig

    model = _ready(create_model(_NAME, num_classes=2, image_size=28))  # float64, with the spec removal traces
    config = build_config(SweepConfig, overrides={"checkpoints": ["unused"], "out": str(tmp_path / "sweep")})
    item = SweepModel("k", model, {}, None, config, tmp_path / "scores", "checksum")
    scores = _scores(model, seed=3)
    item.scores_for = lambda *args, **kwargs: scores  # type: ignore[method-assign]
    curve = {"method": "magnitude", "sampling": "none", "scope": "global", "normalize": "none"}
    swept = item.masks(curve, 0.7)
    assert not all(bool(swept[name].all()) for name in ("stem", "dwconv", "fc2"))  # the paper's masks take them too
    physical = item.masks(curve, 0.7, physical=True)
    assert all(bool(physical[name].all()) for name in ("stem", "dwconv", "fc2"))
    _removed_equals_masked(model, physical)
    assert not item.physical_matches_sweep()
