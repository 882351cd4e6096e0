"""Sweep evaluation speed-ups of issue 11: the evaluation images go to the device once per sweep (not per rate or
curve), and ``amp`` autocasts on CUDA only: on the CPU the rows are what they were before, bit for bit."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_scores, tiny_sweep_model

from medprune.config import build_config
from medprune.metrics import metrics_from_predictions, predict
from medprune.pruning import apply_masks, masks_from_scores
from medprune.runs.study import StudyConfig
from medprune.runs.sweep import SweepConfig
from medprune.sweep import on_device as on_device_module
from medprune.sweep.core import CurveParams, SweepInputs, metric_columns, sweep_model
from medprune.sweep.on_device import cached_copies, on_device
from medprune.sweep.table import RowLog, encode_classes
from medprune.sweep.tasks import plan_jobs

RATES = [0.0, 0.3, 0.6]
CURVES = [("lrp", "random"), ("dlb", "random")]
VOLATILE = ("seconds", "finished_at")


def _tiny(device: str = "cpu"):
    model, x, y = tiny_sweep_model(40)
    return model.to(device), x, y


def _scores(model):
    return random_scores(model)


def _sweep(model, x, y, log_path: Path, amp: bool = False, recalibrate: str = "none") -> list[dict]:
    """Two curves swept as two separate calls with fresh SweepInputs (as two executor tasks do)."""
    rows: list[dict] = []
    splits = {"val": (x[:16], y[:16]), "test": (x[16:], y[16:])}  # stacked once per model, as runs.sweep does
    recal = x[:24]
    for curve in CURVES:
        data = SweepInputs(dict(splits), ["a", "b"], recal, amp=amp)
        params = CurveParams("resnet_small", "d", "c", recalibrate=recalibrate, recalibrate_samples=24)
        with torch.no_grad():
            rows += sweep_model(model, params, [curve], RATES, _scores(model), data, RowLog(log_path))
    return rows


def _stable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]


def _counting(monkeypatch) -> list[int]:
    sent: list[int] = []
    real = on_device_module.transfer

    def counted(tensor, device):
        sent.append(id(tensor))
        return real(tensor, device)

    monkeypatch.setattr(on_device_module, "transfer", counted)
    return sent


def test_each_evaluation_tensor_is_sent_once_for_every_rate_setting_and_curve(tmp_path, monkeypatch):
    model, x, y = _tiny()
    val, test, recal = x[:16], x[16:], x[:24]
    sent = _counting(monkeypatch)
    seen: list[int] = []
    real_predict = predict

    def recording_predict(model, data, **kwargs):
        seen.append(id(data[0]))
        return real_predict(model, data, **kwargs)

    monkeypatch.setattr("medprune.sweep.core.predict", recording_predict)
    rows = []
    for recalibrate in ("none", "bn"):  # 2 settings x 2 curves x 2 pruned rates x 2 splits, plus 2 baselines
        for curve in CURVES:
            data = SweepInputs({"val": (val, y[:16]), "test": (test, y[16:])}, ["a", "b"], recal)
            params = CurveParams("resnet_small", "d", "c", recalibrate=recalibrate, recalibrate_samples=24)
            with torch.no_grad():
                rows += sweep_model(model, params, [curve], RATES, _scores(model), data, RowLog(tmp_path / "r.jsonl"))
    assert len(seen) == 2 + 2 * 2 * 2 * 2  # every evaluation ran ...
    assert sorted(sent) == sorted([id(val), id(test), id(recal)])  # ... but each tensor was sent once
    assert set(seen) == {id(val), id(test)}  # on the CPU the sweep evaluates the very tensors it was given
    assert len({r["row_id"] for r in rows}) == 2 + 2 * 2 * 3 * 2


def test_cached_copy_is_reused_renewed_after_an_in_place_change_and_dropped_with_its_tensor(monkeypatch):
    sent = _counting(monkeypatch)
    monkeypatch.setattr(on_device_module, "transfer", lambda t, d: (sent.append(id(t)), t.clone())[1])  # a "device"
    gc.collect()  # copies of tensors that earlier tests dropped must not count
    host = torch.arange(6.0)
    before = cached_copies()
    first = on_device(host, "cpu")
    assert first is not host and on_device(host, "cpu") is first and len(sent) == 1
    host.add_(1)  # changed in place: the stale copy must not be served
    renewed = on_device(host, "cpu")
    assert len(sent) == 2 and torch.equal(renewed, torch.arange(6.0) + 1)
    assert cached_copies() == before + 1
    del host, first, renewed
    gc.collect()
    assert cached_copies() == before


def test_amp_off_and_on_leave_cpu_rows_as_before_bit_for_bit(tmp_path):
    model, x, y = _tiny()
    plain = _sweep(model, x, y, tmp_path / "plain.jsonl", amp=False)
    amp = _sweep(model, x, y, tmp_path / "amp.jsonl", amp=True)
    assert _stable(plain) == _stable(amp)
    # the rows equal what the evaluation gave before this change: masks applied, predict on the host tensors
    masks = masks_from_scores(_scores(model)("lrp", "random"), 0.3)
    with apply_masks(model, masks):
        probs, truth = predict(model, (x[16:], y[16:]), batch_size=256)
    row = next(r for r in plain if (r["method"], r["rate"], r["split"]) == ("lrp", 0.3, "test"))
    assert row["predictions"] == encode_classes(probs.argmax(axis=1))
    expected = metric_columns(metrics_from_predictions(probs, truth, ["a", "b"]))
    assert {k: row[k] for k in ("accuracy", "balanced_accuracy", "auroc")} == {
        k: expected[k] for k in ("accuracy", "balanced_accuracy", "auroc")
    }
    assert np.array_equal(predict(model, (x, y), amp=True)[0], predict(model, (x, y))[0])


def test_amp_option_reaches_every_curve_task_and_the_paper_config_turns_it_on():
    assert SweepConfig().amp is False
    params = {0: [CurveParams("m", "d", "c")]}
    jobs, _ = plan_jobs(params, CURVES, RATES, ["val", "test"], lambda sign: None, {}, amp=True)  # type: ignore[arg-type]
    assert jobs and all(job.amp for job in jobs)
    paper = build_config(StudyConfig, Path(__file__).resolve().parents[1] / "configs" / "study-paper.yaml")
    assert paper.sweep["amp"] is True


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sweep_sends_once_and_autocasts(tmp_path, monkeypatch):
    model, x, y = _tiny("cuda")
    sent = _counting(monkeypatch)
    dtypes: list[torch.dtype] = []
    hook = model.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    amp = _sweep(model, x, y, tmp_path / "amp.jsonl", amp=True)
    assert len(sent) == 3 and torch.float16 in dtypes  # val, test, recalibration images; float16 logits
    hook.remove()
    plain = _sweep(model, x, y, tmp_path / "plain.jsonl", amp=False)
    for a, p in zip(amp, plain, strict=True):
        assert a["row_id"] == p["row_id"] and abs(a["accuracy"] - p["accuracy"]) <= 0.1
