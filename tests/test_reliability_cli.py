"""Issue 14 through the ``medprune`` command: one test per numbered item, each reproducing the reported case.

Exit code 2 and one line naming the file / key / value is the promise for every user error (docs/reliability.md).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from medprune.checkpoint import save_checkpoint
from medprune.cli.main import main
from medprune.data import load_dataset
from medprune.models import create_model
from medprune.rundir import HOLDER_FILE
from medprune.scoring.request import ScoreRequest
from medprune.scoring.store import compute_scores

TRAIN = ["--model", "resnet_small", "--epochs", "1", "--max-train-samples", "48", "--set", "max_eval_samples=24"]
TRAIN += ["--no-progress", "--device", "cpu", "--set", "bn_recalibration=false"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDPRUNE_OFFLINE", "1")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("resnet_small", num_classes=2, image_size=28)
    meta = {"class_names": ["normal", "pneumonia"], "dataset": {"name": "pneumoniamnist"}}
    return save_checkpoint(tmp_path / "ck" / "model", model, meta)


def small_npz(data_root: Path, folder: Path, n: int = 40, **replace: np.ndarray) -> Path:
    """``breastmnist.npz`` with the first ``n`` real samples per split and the arrays in ``replace`` swapped in."""
    with np.load(data_root / "breastmnist" / "breastmnist.npz") as real:
        arrays = {key: real[key][:n] for key in real.files}
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "breastmnist.npz", **{**arrays, **replace})
    return folder / "breastmnist.npz"


# 1. two sweeps on one folder ------------------------------------------------------------------------------------------
GATED = """
import sys, time
from pathlib import Path
from medprune.cli.main import main
ready, gate = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
while not gate.exists():
    time.sleep(0.01)
sys.exit(main(sys.argv[3:]))
"""


def _sweep_argv(checkpoint: Path, out: Path, data_root: Path) -> list[str]:
    argv = ["sweep", "--checkpoints", str(checkpoint), "--out", str(out), "--data-root", str(data_root)]
    return [*argv, "--methods", "", "--controls", "magnitude", "--rates", "0.5", "--set", "seeds=0"]


def test_1_second_writer_exits_2_naming_the_first_and_rows_stay_unique(tmp_path, checkpoint, data_root, capsys):
    out, ready, gate = tmp_path / "sweep", tmp_path / "ready", tmp_path / "go"
    argv = _sweep_argv(checkpoint, out, data_root)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pipes = {"env": env, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    second = subprocess.Popen([sys.executable, "-c", GATED, str(ready), str(gate), *argv], **pipes)
    _wait_for(ready, second)  # the second sweep has imported medprune and waits at the gate
    first = subprocess.Popen([sys.executable, "-m", "medprune.cli.main", *argv], **pipes)
    _wait_for(out / HOLDER_FILE, first)  # the first sweep holds the folder
    gate.touch()
    _, second_err = second.communicate(timeout=300)
    _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err
    assert second.returncode == 2, second_err
    assert f"being written by pid {first.pid}" in second_err and "medprune sweep" in second_err
    assert "Traceback" not in second_err
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len({r["row_id"] for r in rows}) > 0
    # a log written twice over (two writers before folders were locked) still yields each row once
    log = out / "rows.jsonl"
    log.write_text(log.read_text() * 2)
    assert main(argv) == 0
    again = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(r["row_id"] for r in again) == sorted(r["row_id"] for r in rows)


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while not path.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.01)


# 2. silent overwrites -------------------------------------------------------------------------------------------------
def test_2_train_into_another_runs_folder_is_refused_unless_overwrite(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    assert (
        main(["train", "--dataset", "breastmnist", "--data-root", str(data_root), "--out-dir", str(out), *TRAIN]) == 0
    )
    model = digest(out / "model.safetensors")
    argv = ["train", "--dataset", "pneumoniamnist", "--data-root", str(data_root), "--out-dir", str(out), *TRAIN]
    capsys.readouterr()
    assert main(argv) == 2
    line = error_line(capsys)
    assert str(out) in line and 'dataset: "breastmnist" -> "pneumoniamnist"' in line and "--overwrite" in line
    assert digest(out / "model.safetensors") == model
    assert main([*argv, "--overwrite"]) == 0
    (old,) = out.glob(".old-*")
    assert digest(old / "model.safetensors") == model
    assert yaml.safe_load((old / "config.yaml").read_text())["dataset"] == "breastmnist"
    assert json.loads((out / "model.json").read_text())["dataset"]["name"] == "pneumoniamnist"


def test_2_sweep_with_other_settings_keeps_the_first_config(tmp_path, checkpoint, data_root, capsys):
    out = tmp_path / "sweep"
    base = ["sweep", "--checkpoints", str(checkpoint), "--out", str(out), "--data-root", str(data_root)]
    base += ["--methods", "", "--controls", "magnitude", "--set", "seeds=0"]
    assert main([*base, "--rates", "0.5"]) == 0
    config = (out / "config.yaml").read_bytes()
    capsys.readouterr()
    assert main([*base, "--rates", "0.3"]) == 2
    assert "rates: [0.5] -> [0.3]" in error_line(capsys)
    assert (out / "config.yaml").read_bytes() == config


# 3. tracebacks instead of errors --------------------------------------------------------------------------------------
def test_3_unwritable_output_folder_is_named_before_any_work(tmp_path, checkpoint, data_root, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for argv in (
        ["train", "--data-root", str(data_root), "--out-dir", str(blocker / "run"), *TRAIN],
        ["evaluate", str(checkpoint), "--data-root", str(data_root), "--out", str(blocker / "eval.json")],
        ["score", str(checkpoint), "--methods", "magnitude", "--out", str(blocker)],
    ):
        started = time.perf_counter()
        assert main(argv) == 2
        assert str(blocker) in error_line(capsys)
        assert time.perf_counter() - started < 20


def test_3_malformed_yaml_names_file_and_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("rates: [0.1, 0.2\nmethods: lrp\n")
    assert main(["sweep", "--config", str(config)]) == 2
    line = error_line(capsys)
    assert f"config file {config}, line 2" in line and "<unicode string>" not in line


def test_3_verbose_shows_the_traceback(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("rates: [0.1\n")
    assert main(["sweep", "--config", str(config), "--verbose"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_3_truncated_score_file_in_the_cache_is_set_aside_and_recomputed(tmp_path, checkpoint, data_root, capsys):
    out = tmp_path / "scores"
    argv = ["score", str(checkpoint), "--methods", "magnitude", "--samplings", "random", "--out", str(out)]
    argv += ["--data-root", str(data_root)]
    assert main(argv) == 0
    (path,) = out.glob("magnitude_*.safetensors")
    good = {key: value.clone() for key, value in load_file(str(path)).items()}  # not a view of the file
    path.write_bytes(path.read_bytes()[:100])
    assert main(argv) == 0
    recomputed = load_file(str(path))
    assert recomputed.keys() == good.keys() and all(torch.equal(recomputed[k], good[k]) for k in good)
    assert len(list(out.glob("magnitude_*.safetensors.corrupt-*"))) == 1


def test_3_extra_model_key_in_a_sidecar_names_the_key(tmp_path, checkpoint, data_root, capsys):
    sidecar = checkpoint.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["model"]["depth"] = 3
    sidecar.write_text(json.dumps(meta))
    assert main(["evaluate", str(checkpoint), "--data-root", str(data_root)]) == 2
    line = error_line(capsys)
    assert str(sidecar) in line and "['depth']" in line and "allowed: name, num_classes" in line


# 4. bad data found late -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_4_empty_split_fails_before_the_first_epoch(tmp_path, data_root, split, capsys):
    empty = {f"{split}_images": np.zeros((0, 28, 28), np.uint8), f"{split}_labels": np.zeros((0, 1), np.uint8)}
    path = small_npz(data_root, tmp_path / "data", **empty)
    out = tmp_path / "run"
    assert (
        main(["train", "--dataset", "breastmnist", "--data-root", str(path.parent), "--out-dir", str(out), *TRAIN]) == 2
    )
    line = error_line(capsys)
    assert f"the {split} split is empty" in line and f"{path}[{split}]" in line
    assert not (out / "history.csv").exists()


def test_4_corrupt_image_is_named_before_training(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "ds" / name).mkdir(parents=True)
        for k in range(8):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(tmp_path / "ds" / name / f"{k}.png")
    bad = tmp_path / "ds" / "b" / "3.png"
    bad.write_bytes(b"")
    out = tmp_path / "run"
    argv = ["train", "--dataset", "folder", "--data-root", str(tmp_path / "ds"), "--out-dir", str(out), *TRAIN]
    assert main([*argv, "--image-size", "16", "--set", "max_eval_samples=4"]) == 2
    assert str(bad) in error_line(capsys)
    assert not (out / "history.csv").exists()


def test_4_bad_method_option_value_is_refused_before_the_data_loads(tmp_path, checkpoint, capsys):
    argv = ["score", str(checkpoint), "--methods", "ig", "--option", "ig.steps=-3", "--out", str(tmp_path / "s")]
    assert main([*argv, "--data-root", str(tmp_path / "no-data-here")]) == 2
    line = error_line(capsys)
    assert "'ig'" in line and "steps must be an int >= 1, got -3" in line


# 5. silent wrong results ----------------------------------------------------------------------------------------------
def test_5_prune_scores_file_method_is_checked_or_taken(tmp_path, checkpoint, data_root, capsys):
    from medprune.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    train = load_dataset("pneumoniamnist", data_root, image_size=28).train
    record = compute_scores(model, train, ScoreRequest("magnitude"), cache_dir=tmp_path / "scores")
    base = ["prune", "--checkpoint", str(checkpoint), "--scores", str(record.path), "--data-root", str(data_root)]
    base += ["--rate", "0.3", "--set", "output=masked"]
    assert main([*base, "--out", str(tmp_path / "p1"), "--method", "lrp"]) == 2
    line = error_line(capsys)
    assert str(record.path) in line and "holds magnitude scores but method='lrp'" in line
    assert not (tmp_path / "p1").exists()
    assert main([*base, "--out", str(tmp_path / "p2")]) == 0
    assert yaml.safe_load((tmp_path / "p2" / "config.yaml").read_text())["method"] == "magnitude"


def test_5_fractional_labels_are_refused(tmp_path, data_root, capsys):
    path = small_npz(data_root, tmp_path / "data", train_labels=np.array([[0.0], [1.5]] * 20))
    out = tmp_path / "run"
    assert (
        main(["train", "--dataset", "breastmnist", "--data-root", str(path.parent), "--out-dir", str(out), *TRAIN]) == 2
    )
    line = error_line(capsys)
    assert str(path) in line and "train_labels" in line and "1.5" in line


# 6. messages that name the file ---------------------------------------------------------------------------------------
def test_6_object_labels_name_the_file(tmp_path, data_root, capsys):
    path = small_npz(data_root, tmp_path / "data", test_labels=np.array([[0], [1], None, "x"] * 10, dtype=object))
    argv = ["train", "--dataset", "breastmnist", "--data-root", str(path.parent), "--out-dir", str(tmp_path / "r")]
    assert main([*argv, *TRAIN]) == 2
    line = error_line(capsys)
    assert str(path) in line and "'test_labels'" in line and "dtype object" in line


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda text: b"\xff\xfe" + text, "not UTF-8"),
        (lambda text: text.replace(b'"model.safetensors"', b'"../x"'), "weights_file must be a file name"),
    ],
)
def test_6_bad_sidecars_name_the_file(tmp_path, checkpoint, data_root, change, expected, capsys):
    sidecar = checkpoint.with_suffix(".json")
    sidecar.write_bytes(change(sidecar.read_bytes()))
    assert main(["evaluate", str(checkpoint), "--data-root", str(data_root)]) == 2
    line = error_line(capsys)
    assert str(sidecar) in line and expected in line
