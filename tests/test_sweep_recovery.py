"""Fine-tuning and distillation as sweep variants (issue 10): keys, held zeros, determinism, old rows, input, labels."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import random_scores, tiny_sweep_model

from medprune.checkpoint import save_checkpoint
from medprune.cli.main import main
from medprune.config import ConfigError, build_config, config_to_dict, flat_record
from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.pruning import masks_from_scores
from medprune.pruning.masked import following_batchnorms, mask_model, zeroing_plan
from medprune.recovery.recipe import FinetuneRecipe
from medprune.report.markdown import results_markdown
from medprune.report.page import ReportTables
from medprune.report.tables import table1
from medprune.rundir import ConfigMismatchError, RunDir
from medprune.runs.sweep import COSMETIC, LATER_DEFAULTS, SweepConfig, validate_config
from medprune.sweep.core import CurveParams, SweepInputs, sweep_model
from medprune.sweep.recovery_step import Recovery, recovered_model
from medprune.sweep.table import RowLog, row_id, row_key

CURVE = [("lrp", "random")]
UNSTABLE = ("seconds", "finished_at")


def _tiny():
    return tiny_sweep_model(64)


def _scores(model):
    return random_scores(model, seed=lambda method: 7)


def _inputs(x, y):
    train = torch.utils.data.TensorDataset(x[:32], y[:32])
    return SweepInputs({"val": (x[32:48], y[32:48]), "test": (x[48:], y[48:])}, ["a", "b"], x[:32], train=train)


def _sweep(tmp_path, name, params, model, x, y, scores_for=None):
    log = RowLog(tmp_path / f"{name}.jsonl")
    with torch.no_grad():  # as the sweep runs: fine-tuning must switch gradients back on itself
        rows = sweep_model(model, params, CURVE, [0.0, 0.5], scores_for or _scores(model), _inputs(x, y), log)
    return {(r["method"], r["rate"], r["split"]): r for r in rows}, log


RECIPE = FinetuneRecipe(epochs=0, distill=False, batch_size=8, lr=1e-2)
BN = CurveParams("resnet_small", "d", "c", recalibrate="bn", recalibrate_samples=32)
FT = dataclasses.replace(BN, recovery=Recovery.of(finetune_epochs=2, recipe=RECIPE))
KD = dataclasses.replace(BN, recovery=Recovery.of(finetune_epochs=2, distill=True, recipe=RECIPE))


def test_finetuned_rows_differ_from_recalibrated_ones_and_the_model_is_unchanged(tmp_path):
    model, x, y = _tiny()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    bn, _ = _sweep(tmp_path, "bn", BN, model, x, y)
    ft, _ = _sweep(tmp_path, "ft", FT, model, x, y)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # the teacher is never trained
    for split in ("val", "test"):
        tuned, plain = ft[("lrp", 0.5, split)], bn[("lrp", 0.5, split)]
        assert tuned["finetune_epochs"] == 2 and tuned["distill"] is False and tuned["finetune_lr"] == 0.01
        assert plain["finetune_epochs"] == 0 and "finetune_lr" not in plain
        assert tuned["row_id"] != plain["row_id"] and tuned["achieved_rate"] == plain["achieved_rate"]
        assert tuned["predictions"] != plain["predictions"]
        # rate 0 stays the unpruned model: the baseline's metrics, no fine-tuning
        assert ft[("lrp", 0.0, split)]["predictions"] == ft[("baseline", 0.0, split)]["predictions"]
    assert ft[("baseline", 0.0, "val")]["finetune_epochs"] == 0  # one baseline shared by every recovery


def test_pruned_units_stay_exactly_zero_through_finetuning_and_distillation():
    model, x, y = _tiny()
    masks = masks_from_scores(_scores(model)("lrp", "random"), 0.5)
    train = torch.utils.data.TensorDataset(x[:32], y[:32])
    recovery = Recovery.of(finetune_epochs=2, distill=True, recipe=RECIPE)
    with torch.no_grad():
        tuned = recovered_model(model, masks, recovery, train, seed=0, recalibration=x[:32])
    plan = zeroing_plan(tuned, unit_groups(tuned), masks, following_batchnorms(tuned))
    assert plan and all(bool((param.detach()[rows] == 0).all()) for param, rows in plan)
    masked = mask_model(model, masks)
    changed = [
        name for name, p in tuned.named_parameters() if not torch.equal(p, dict(masked.named_parameters())[name])
    ]
    assert changed  # the kept units were trained


def test_finetuned_rows_are_deterministic_for_a_seed(tmp_path):
    model, x, y = _tiny()
    first, _ = _sweep(tmp_path, "a", KD, model, x, y)
    again, _ = _sweep(tmp_path, "b", KD, model, x, y)
    assert first.keys() == again.keys()
    for key, row in first.items():
        assert {k: v for k, v in row.items() if k not in UNSTABLE} == {
            k: v for k, v in again[key].items() if k not in UNSTABLE
        }
    assert first[("lrp", 0.5, "test")]["distill"] is True and first[("lrp", 0.5, "test")]["distill_weight"] == 1.0


def test_old_rows_keep_their_ids_and_are_resumed_not_recomputed(tmp_path):
    # ids written by the sweep before fine-tuning existed (rows without finetune_epochs / distill)
    assert CurveParams("resnet_small", "d", "c").row("lrp", "random", 0.5, "val")["row_id"] == "9a9ad560afe432b0"
    assert BN.row("magnitude", "none", 0.25, "test")["row_id"] == "2f97ce5aa7d45915"
    model, x, y = _tiny()
    _, log = _sweep(tmp_path, "old", BN, model, x, y)
    old = [{k: v for k, v in r.items() if k not in ("finetune_epochs", "distill")} for r in log.read()]
    assert all(row_id(r) == r["row_id"] for r in old)
    log.path.write_text("".join(json.dumps(r) + "\n" for r in old))
    before = log.path.read_bytes()

    def never(method, sampling):
        raise AssertionError("a finished curve was scored again")

    rows, _ = _sweep(tmp_path, "old", BN, model, x, y, scores_for=never)
    assert log.path.read_bytes() == before  # nothing recomputed or rewritten
    assert all(r["finetune_epochs"] == 0 and r["distill"] is False for r in rows.values())  # read with the defaults
    # a fine-tuned variant of the same curve is a new row beside the old one
    assert row_key(FT.row("lrp", "random", 0.5, "val")) != row_key(BN.row("lrp", "random", 0.5, "val"))


def test_a_folder_recorded_before_the_recovery_keys_resumes(tmp_path):
    folder = tmp_path / "sweep"
    current = flat_record(SweepConfig, config_to_dict(SweepConfig(checkpoints=["m"], out=str(folder))))
    legacy = {k: v for k, v in current.items() if k not in LATER_DEFAULTS}
    assert "scope" in legacy and "ranking" not in legacy  # as folders recorded it before the config had parts
    with RunDir(folder, "sweep", legacy, cosmetic=COSMETIC):
        (folder / "rows.jsonl").write_text("")
    config = SweepConfig(checkpoints=["m"], out=str(folder))
    with RunDir(folder, "sweep", config, cosmetic=COSMETIC, defaults=LATER_DEFAULTS) as run:
        assert run.resumed
    tuned = SweepConfig(checkpoints=["m"], out=str(folder), finetune_epochs=[2])
    with pytest.raises(ConfigMismatchError, match=r"finetune_epochs: \[0\] -> \[2\]"):
        RunDir(folder, "sweep", tuned, cosmetic=COSMETIC, defaults=LATER_DEFAULTS).__enter__()
    other_lr = build_config(SweepConfig, overrides={"checkpoints": ["m"], "out": str(folder), "finetune_lr": 0.01})
    with pytest.raises(ConfigMismatchError, match=r"finetune_lr: 0.001 -> 0.01"):  # named by the flat key
        RunDir(folder, "sweep", other_lr, cosmetic=COSMETIC, defaults=LATER_DEFAULTS).__enter__()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"finetune_epochs": [-1]}, r"finetune_epochs=-1 is not allowed; valid values: ints >= 0"),
        ({"finetune_epochs": []}, r"finetune_epochs=\[\] is not allowed; valid values: a non-empty list"),
        ({"finetune_epochs": [1.5]}, r"finetune_epochs=1.5"),
        ({"distill": ["yes"]}, r"distill entry 'yes' is not allowed; valid values: true, false"),
        ({"distill": [True]}, r"distill=\[True\] needs a finetune_epochs entry >= 1"),
        ({"finetune_lr": 0.0}, r"finetune_lr=0.0 is not allowed"),
        ({"finetune_batch_size": 1}, r"finetune_batch_size=1 is not allowed; valid values: ints >= 2"),
        ({"finetune_samples": 1}, r"finetune_samples=1 is not allowed"),
        ({"distill_temperature": -1.0}, r"distill_temperature=-1.0 is not allowed; valid values: numbers > 0"),
        ({"distill_weight": 2.0}, r"distill_weight=2.0 is not allowed; valid values: numbers in \[0, 1\]"),
    ],
)
def test_bad_recovery_options_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        given = {"checkpoints": ["never-read.safetensors"], **change}
        fields = {f.name for f in dataclasses.fields(SweepConfig)}  # the recipe's keys are a part's: built by key
        validate_config(SweepConfig(**given) if set(given) <= fields else build_config(SweepConfig, overrides=given))


def test_bad_recovery_option_on_the_command_line_is_one_line_exit_2(tmp_path, capsys):
    model = create_model("resnet_small", num_classes=2, image_size=16)
    checkpoint = save_checkpoint(tmp_path / "m" / "model", model, {"class_names": ["a", "b"]})
    argv = ["sweep", "--checkpoints", str(checkpoint), "--out", str(tmp_path / "s"), "--set", "finetune_epochs=-2"]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "finetune_epochs=-2" in err[0] and "ints >= 0" in err[0]
    assert not (tmp_path / "s").exists()


def _rows(accuracy_by_recovery):
    rows = []
    for split in ("val", "test"):
        base = {"checkpoint": "k", "dataset": "d", "method": "baseline", "sampling": "none", "rate": 0.0}
        rows.append({**base, "split": split, "accuracy": 0.9, "finetune_epochs": 0, "distill": False})
        for (epochs, distill), accuracy in accuracy_by_recovery.items():
            recovery = Recovery.of(epochs, distill)
            for seed in (0, 1):
                row = CurveParams("m", "d", "k", seed=seed, recovery=recovery).row("lrp", "random", 0.5, split)
                rows.append({**row, "accuracy": accuracy, "achieved_rate": 0.5})
    return rows


def test_report_labels_and_separates_recovered_curves():
    rows = _rows({(0, False): 0.6, (2, False): 0.85, (2, True): 0.88})
    lines = table1(rows, (0.5,), n_resamples=50)
    assert len(lines) == 3
    drops = {(r["finetune_epochs"], r["distill"]): round(r["mean@0.50"], 3) for r in lines}
    assert drops == {(0, False): 0.3, (2, False): 0.05, (2, True): 0.02}
    tables = ReportTables(rows, lines, [], [], [], [], [])
    text = results_markdown(tables, (0.5,), (0.05,))
    assert "paper (global/none/signed/none) " in text  # the paper protocol, masked only
    assert "paper (global/none/signed/none+ft2) " in text and "paper (global/none/signed/none+ft2+kd) " in text
