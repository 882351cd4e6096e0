"""Recovery: pruned units stay exactly zero through fine-tuning (and distillation), resume is exact, iterative masks
are nested and reach the target."""

from __future__ import annotations

import copy
import functools
import multiprocessing
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import TensorDataset

from medprune.config import ConfigError
from medprune.models import create_model
from medprune.models.units import capture_activations, unit_groups
from medprune.pruning.iterative import iterative_prune, nested_masks, round_rates
from medprune.pruning.masked import mask_model
from medprune.pruning.masks import achieved_rate, masks_from_scores
from medprune.pruning.physical import coupled_groups, remove_units
from medprune.recovery.finetune import MaskHold, _settings_text, distillation_loss, finetune, hold_masks, recover
from medprune.recovery.recalibration import recalibrate_batchnorm
from medprune.recovery.recipe import FinetuneRecipe

MODELS = ["vgg_small", "resnet_small", "vit_small"]
SIZE = 16


@functools.cache
def _base(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=2, image_size=SIZE)


def _model(name: str) -> torch.nn.Module:
    return copy.deepcopy(_base(name))


def _masks(model: torch.nn.Module, rate: float = 0.5, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    scores = {g.name: torch.rand(g.num_units, generator=generator) for g in unit_groups(model)}
    return masks_from_scores(scores, rate, couplings=coupled_groups(model))


def _data(n: int = 24, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, SIZE, SIZE, generator=generator)
    labels = torch.arange(n) % 2
    data = TensorDataset(images, labels)
    data.labels = labels.numpy()  # type: ignore[attr-defined]
    return data


def _pruned_params(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """(parameter name, pruned rows) of everything that masking zeroes, found through hold_masks' plan."""
    names = {id(p): n for n, p in model.named_parameters()}
    hold = hold_masks(model, masks)
    hold.remove()
    return [(names[id(p)], rows) for p, rows in hold.parameters]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("distill", [False, True])
def test_pruned_weights_and_gradients_stay_exactly_zero(
    name: str, distill: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(name)
    masks = _masks(model)
    plan = _pruned_params(copy.deepcopy(model), masks)
    assert plan, "the masks must zero something"
    grads_seen: list[float] = []
    moved: list[float] = []
    original = MaskHold.reapply

    def spy(self: MaskHold) -> None:  # runs right after each optimiser step, before the zeros are written again
        for param, rows in self.parameters:
            if param.grad is not None:
                grads_seen.append(float(param.grad[rows].abs().max()))
            moved.append(float(param.detach()[rows].abs().max()))
        original(self)

    monkeypatch.setattr(MaskHold, "reapply", spy)
    result = finetune(
        model,
        masks,
        _data(),
        FinetuneRecipe(epochs=2, batch_size=8, distill_weight=0.7),
        weight_decay=0.1,  # decay and momentum would move zeros without the hold
        teacher=model if distill else None,
    )
    assert grads_seen and max(grads_seen) == 0.0
    assert max(moved) == 0.0  # the step itself kept them at zero; reapply is a second guard
    params = dict(result.model.named_parameters())
    for pname, rows in plan:
        assert torch.count_nonzero(params[pname].detach()[rows]) == 0, pname
    kept_changed = any(not torch.equal(p, q) for p, q in zip(model.parameters(), result.model.parameters()))
    assert kept_changed, "fine-tuning changed nothing"
    # the units' outputs are exactly zero, and no hook is left behind
    groups = unit_groups(result.model)
    with capture_activations(result.model, groups) as acts, torch.no_grad():
        result.model(torch.randn(4, 3, SIZE, SIZE))
    for group in groups:
        pruned = (~masks[group.name]).nonzero().flatten()
        dim = group.channel_dim
        act = acts[group.name]
        if group.unit_width > 1:
            act = act.unflatten(-1, (group.num_units, group.unit_width))
            dim = -2
        assert torch.count_nonzero(act.index_select(dim % act.dim(), pruned)) == 0, group.name
    assert all(not p._backward_hooks for p in result.model.parameters())


def test_finetuned_model_removes_physically_with_equal_outputs() -> None:
    model = _model("resnet_small")
    masks = _masks(model, 0.5)
    result = finetune(model, masks, _data(), FinetuneRecipe(epochs=1, batch_size=8))
    small = remove_units(result.model, masks)
    x = torch.randn(5, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(small(x), result.model(x), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_distillation_loss_matches_definition() -> None:
    student, teacher = torch.randn(6, 3), torch.randn(6, 3)
    t = 3.0
    p = torch.softmax(teacher / t, 1)
    expected = (p * (p.log() - torch.log_softmax(student / t, 1))).sum(1).mean() * t**2
    torch.testing.assert_close(distillation_loss(student, teacher, t), expected)
    assert float(distillation_loss(teacher, teacher, t)) == pytest.approx(0.0, abs=1e-6)
    # class-weighted, like CrossEntropyLoss(weight=): a weighted mean of the per-sample terms
    per_sample = (p * (p.log() - torch.log_softmax(student / t, 1))).sum(1) * t**2
    weights = torch.tensor([1.0, 3.0, 1.0, 3.0, 1.0, 3.0])
    torch.testing.assert_close(
        distillation_loss(student, teacher, t, weights), (per_sample * weights).sum() / weights.sum()
    )
    torch.testing.assert_close(distillation_loss(student, teacher, t, torch.full((6,), 2.0)), expected)


def test_recipe_rejects_bad_values_naming_them() -> None:
    with pytest.raises(ConfigError, match=r"distill_weight=1.5 is not allowed; valid values: numbers in \[0, 1\]"):
        FinetuneRecipe(distill_weight=1.5)
    with pytest.raises(ConfigError, match=r"batch_size=1 is not allowed; valid values: ints >= 2"):
        FinetuneRecipe(batch_size=1)
    with pytest.raises(ConfigError, match=r"epochs=-1 is not allowed"):
        FinetuneRecipe(epochs=-1)
    with pytest.raises(ConfigError, match=r"lr=True is not allowed"):
        FinetuneRecipe(lr=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"augment='yes' is not allowed"):
        FinetuneRecipe(augment="yes")  # type: ignore[arg-type]


def _interrupted_run(model_state: dict, masks: dict, checkpoint_dir: str) -> None:
    """Child process: fine-tune 3 epochs but die (hard) right after epoch 2's checkpoint is written."""
    import os

    import medprune.recovery.finetune as recovery

    model = _model("vgg_small")
    model.load_state_dict(model_state)
    original = recovery._save_checkpoint

    def save_then_die(path, run_id, epoch, *args, **kwargs):  # noqa: ANN001, ANN202
        original(path, run_id, epoch, *args, **kwargs)
        if epoch == 2:
            os._exit(9)  # no cleanup, like SIGKILL

    recovery._save_checkpoint = save_then_die
    recovery.finetune(model, masks, _data(), FinetuneRecipe(epochs=3, batch_size=8), checkpoint_dir=checkpoint_dir)


def test_resume_after_kill_gives_the_same_weights(tmp_path: Path) -> None:
    model = _model("vgg_small")
    masks = _masks(model, 0.4)
    straight = finetune(model, masks, _data(), FinetuneRecipe(epochs=3, batch_size=8), weight_decay=0.01)
    context = multiprocessing.get_context("spawn")
    # the child uses the default weight decay: a different run id must not be resumed, so check it is ignored first
    child = context.Process(target=_interrupted_run, args=(model.state_dict(), masks, str(tmp_path)))
    child.start()
    child.join(300)
    assert child.exitcode == 9
    assert (tmp_path / "finetune.safetensors").is_file()
    ignored = finetune(
        model, masks, _data(), FinetuneRecipe(epochs=3, batch_size=8), weight_decay=0.01, checkpoint_dir=tmp_path
    )
    assert ignored.resumed_epochs == 0
    for p, q in zip(straight.model.state_dict().values(), ignored.model.state_dict().values()):
        assert torch.equal(p, q)
    # same settings as the killed child: resumes after epoch 2, trains epoch 3 only, ends bit-identical
    reference = finetune(model, masks, _data(), FinetuneRecipe(epochs=3, batch_size=8))
    child = context.Process(target=_interrupted_run, args=(model.state_dict(), masks, str(tmp_path / "b")))
    child.start()
    child.join(300)
    assert child.exitcode == 9
    resumed = finetune(model, masks, _data(), FinetuneRecipe(epochs=3, batch_size=8), checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_epochs == 2
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    for (key, p), q in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), key


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(2, 12), min_size=1, max_size=4),
    target=st.floats(0.05, 0.9),
    rounds=st.integers(1, 4),
    scope=st.sampled_from(["global", "layer"]),
    seed=st.integers(0, 1000),
)
def test_nested_masks_reach_each_round_and_never_resurrect(
    sizes: list[int], target: float, rounds: int, scope: str, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    names = [f"g{i}" for i in range(len(sizes))]
    masks = {n: torch.ones(k, dtype=torch.bool) for n, k in zip(names, sizes)}
    total = sum(sizes)
    for rate in round_rates(target, rounds):
        scores = {n: torch.randn(k, generator=generator) for n, k in zip(names, sizes)}
        new = nested_masks(scores, masks, rate, scope=scope)  # type: ignore[arg-type]
        for n in names:
            assert not (new[n] & ~masks[n]).any(), "a removed unit came back"
            assert new[n].sum() >= 1
        if scope == "global":
            one_shot = masks_from_scores(scores, rate)
            # same count as one-shot pruning at that rate (unless min_keep stops it)
            assert abs(achieved_rate(new) - achieved_rate(one_shot)) <= 1 / total + 1e-9
        masks = new


def test_iterative_prune_reaches_the_target_with_nested_masks() -> None:
    model = _model("vgg_small")
    seen: list[dict[str, torch.Tensor]] = []
    calls: list[int] = []

    def score(current: torch.nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        seen.append({k: v.clone() for k, v in masks.items()})
        # magnitude of the current weights: removed units score 0 (the lowest), kept ones their row norm
        return {
            g.name: current.get_submodule(g.module).weight.detach().flatten(1).abs().sum(1)
            for g in unit_groups(current)
        }

    def recover(masked: torch.nn.Module, masks: dict[str, torch.Tensor]) -> torch.nn.Module:
        calls.append(1)
        return finetune(masked, masks, _data(), FinetuneRecipe(epochs=1, batch_size=8)).model

    result = iterative_prune(model, score, 0.6, 3, recover)
    assert [r.target_rate for r in result.rounds] == pytest.approx([0.2, 0.4, 0.6])
    total = sum(g.num_units for g in unit_groups(model))
    assert abs(result.rounds[-1].achieved_rate - 0.6) <= 1 / total
    assert len(calls) == 3 and len(seen) == 3
    for earlier, later in zip(seen[1:], [*seen[2:], result.masks]):
        for name in earlier:
            assert not (later[name] & ~earlier[name]).any()
    assert all(a.achieved_rate < b.achieved_rate for a, b in zip(result.rounds, result.rounds[1:]))
    for name, rows in _pruned_params(copy.deepcopy(result.model), result.masks):
        assert torch.count_nonzero(dict(result.model.named_parameters())[name].detach()[rows]) == 0


def test_round_rates_schedules() -> None:
    assert round_rates(0.5, 1) == [0.5]
    geometric = round_rates(0.75, 2, "geometric")
    assert geometric == pytest.approx([0.5, 0.75])
    with pytest.raises(ValueError, match="rounds"):
        round_rates(0.5, 0)


def test_fine_tuning_checkpoints_keep_the_run_id_of_before_the_recipe() -> None:
    """Compress run folders made with the old ``FinetuneSettings`` still resume: the run id hashes the same text."""
    assert _settings_text(FinetuneRecipe(), 3, 0, 0.0) == (
        "FinetuneSettings(epochs=3, lr=0.001, weight_decay=0.0, lr_step=10, lr_gamma=0.1, batch_size=32, "
        "class_weights='inverse', distill_temperature=4.0, distill_weight=1.0, recalibrate_samples=None, seed=0, "
        "amp=True)"
    )


def test_recover_without_epochs_masks_and_recalibrates_and_with_epochs_fine_tunes() -> None:
    model = _model("resnet_small")
    masks = _masks(model, 0.5)
    images = torch.randn(16, 3, SIZE, SIZE)
    plain = recover(model, masks, FinetuneRecipe(epochs=0), recalibration=images)
    reference = mask_model(model, masks)
    recalibrate_batchnorm(reference, images)
    for (key, p), q in zip(reference.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(p, q), key
    with pytest.raises(ValueError, match="training split"):
        recover(model, masks, FinetuneRecipe(epochs=1))
    recipe = FinetuneRecipe(epochs=1, batch_size=8, distill=True, distill_weight=0.5)
    tuned = recover(model, masks, recipe, _data(), seed=3, recalibration=images)
    direct = finetune(model, masks, _data(), recipe, seed=3, teacher=model, recalibration_data=images).model
    assert not tuned.training
    for (key, p), q in zip(direct.state_dict().items(), tuned.state_dict().values()):
        assert torch.equal(p, q), key
