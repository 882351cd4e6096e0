"""A sweep killed with SIGKILL and restarted with the same command resumes: nothing finished is lost or redone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medprune.sweep.table import RowLog, read_csv, row_key, write_csv

SCRIPT = r"""
import sys, time, torch
from medprune.models import create_model
from medprune.sweep.core import CurveParams, SweepInputs, sweep_model
from medprune.sweep.table import RowLog
from medprune.models.units import unit_groups

class SlowLog(RowLog):
    def append(self, row):
        super().append(row)
        time.sleep(float(sys.argv[2]))

threads = torch.get_num_threads()
torch.set_num_threads(1)
torch.manual_seed(0)
model = create_model("resnet_small", num_classes=3, image_size=16)
g = torch.Generator().manual_seed(1)
x, y = torch.randn(90, 3, 16, 16, generator=g), torch.randint(0, 3, (90,), generator=g)
seeds = {("lrp", "random"): 1, ("magnitude", "none"): 2, ("ig", "clustering"): 3}
def scores_for(method, sampling):
    gen = torch.Generator().manual_seed(seeds[(method, sampling)])
    return {grp.name: torch.rand(grp.num_units, generator=gen) for grp in unit_groups(model)}
rates = [i / 40 for i in range(16)]
data = SweepInputs({"val": (x[:40], y[:40]), "test": (x[40:], y[40:])}, ["a", "b", "c"], batch_size=90)
sweep_model(model, CurveParams("resnet_small", "synthetic", "abc123"), list(seeds), rates, scores_for, data,
            SlowLog(sys.argv[1]))
torch.set_num_threads(threads)
"""
EXPECTED_ROWS = 2 * (1 + 3 * 16)  # (baseline + 3 curves x 16 rates) x (val, test)


def _run(log: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(log), str(delay)], env=env)


def _stable(rows):
    return {row_key(r): {k: v for k, v in r.items() if k not in ("seconds", "finished_at")} for r in rows}


def test_sigkill_then_restart_resumes_without_recomputing(tmp_path, monkeypatch):
    killed = tmp_path / "killed" / "rows.jsonl"
    proc = _run(killed, 0.03)
    deadline = time.time() + 60
    while time.time() < deadline and (not killed.is_file() or killed.read_bytes().count(b"\n") < 12):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = RowLog(killed).read()
    assert 12 <= len(before) < EXPECTED_ROWS, "the sweep must be killed mid-way"
    with open(killed, "ab") as handle:  # a write cut short by the kill
        handle.write(b'{"checkpoint": "abc1')

    assert _run(killed, 0.0).wait(timeout=120) == 0
    after = RowLog(killed).read()
    assert len(after) == EXPECTED_ROWS and len({row_key(r) for r in after}) == EXPECTED_ROWS
    by_key = {row_key(r): r for r in after}
    for row in before:  # finished rows kept verbatim: same timestamps, same ids
        assert by_key[row_key(row)] == row

    clean = tmp_path / "clean" / "rows.jsonl"  # an uninterrupted run, in this process (saves a torch import)
    with monkeypatch.context() as patch:
        patch.setattr(sys, "argv", ["sweep", str(clean), "0"])
        exec(compile(SCRIPT, "sweep", "exec"), {"__name__": "sweep"})
    assert _stable(RowLog(clean).read()) == _stable(after)


def test_partial_last_line_is_ignored_and_cut_before_appending(tmp_path, caplog):
    log = RowLog(tmp_path / "rows.jsonl")
    log.append({"checkpoint": "a", "rate": 0.1, "accuracy": 0.5})
    with open(log.path, "ab") as handle:
        handle.write(b'{"checkpoint": "a", "ra')
    assert len(log.read()) == 1
    log.append({"checkpoint": "a", "rate": 0.2, "accuracy": 0.4})
    lines = log.path.read_text().splitlines()
    assert [json.loads(line)["rate"] for line in lines] == [0.1, 0.2]


def test_damaged_middle_line_is_an_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"rate": 0.1}\nnot json\n{"rate": 0.2}\n')
    with pytest.raises(ValueError, match="line 2"):
        RowLog(path).read()


def test_csv_round_trip_keeps_numbers_and_text(tmp_path):
    rows = [
        {
            "checkpoint": "0012",
            "dataset": "d",
            "method": "lrp",
            "rate": 0.3,
            "accuracy": 0.91,
            "n_test": 10,
            "recall_a": float("nan"),
        },
        {"checkpoint": "0012", "dataset": "d", "method": "lrp", "rate": 0.35, "accuracy": 0.9, "extra": 1.5},
    ]
    back = read_csv(write_csv(rows, tmp_path / "t.csv"))
    assert back[0]["checkpoint"] == "0012" and back[0]["accuracy"] == 0.91 and back[0]["n_test"] == 10
    assert back[0]["recall_a"] != back[0]["recall_a"]  # NaN survives
    assert back[0]["extra"] is None and back[1]["extra"] == 1.5
