"""Issue 24 (reliability, round two) through the ``medprune`` command and the modules behind it.

Each section reproduces a case class of the issue; docs/reliability.md lists them with the promise each test holds.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch

from medprune.checkpoint import save_checkpoint
from medprune.cli.main import main
from medprune.models import create_model
from medprune.rundir import RunDir


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDPRUNE_OFFLINE", "1")
    monkeypatch.setenv("MEDPRUNE_QUIET", "1")


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (lock files aside) with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".medprune.lock")
    }


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = create_model("resnet_small", num_classes=2, image_size=28)
    meta = {"class_names": ["normal", "pneumonia"], "dataset": {"name": "pneumoniamnist"}}
    return save_checkpoint(path, model, meta)


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    return tiny_checkpoint(tmp_path / "ck" / "model")


@pytest.fixture()
def other_run(tmp_path: Path) -> Path:
    """Another run's folder: a trained checkpoint with its record, as ``medprune train`` leaves it."""
    folder = tmp_path / "other_run"
    with RunDir(folder, "train", {"dataset": "pneumoniamnist", "epochs": 1}):
        tiny_checkpoint(folder / "model", seed=1)
    return folder


# 1. nothing overwritten: every command with an --out pointed at another run's files ----------------------------------
def _results_csv(path: Path) -> Path:
    row = {"model": "m", "dataset": "d", "checkpoint": "c", "method": "lrp", "sampling": "random", "sign": "signed"}
    row.update(target="true", n_per_class=10, seed=0, scope="global", normalize="none", rate=0.0, accuracy=0.9)
    row.update(split="test", balanced_accuracy=0.9, recall_a=1.0, recall_b=1.0)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    return path


def _commands(checkpoint: Path, data_root: Path, results: Path) -> dict[str, list[str]]:
    """Each command with an ``--out``, with inputs good enough to reach its output folder."""
    data = ["--data-root", str(data_root)]
    return {
        "train": ["train", "--dataset", "pneumoniamnist", *data, "--model", "resnet_small", "--epochs", "1"],
        "score": ["score", str(checkpoint), *data, "--methods", "magnitude"],
        "prune": ["prune", "--checkpoint", str(checkpoint), *data, "--method", "magnitude", "--rate", "0.5"],
        "compress": ["compress", str(checkpoint), *data, "--method", "magnitude"],
        "sweep": ["sweep", "--checkpoints", str(checkpoint), *data, "--methods", "", "--controls", "magnitude"],
        "report": ["report", "--results", str(results)],
        "demo": ["demo", *data, "--quick"],
        "study": ["study", *data, "--quick"],
        "import": ["import", "--arch", "torchvision:resnet18", "--weights", str(checkpoint), "--num-classes", "2"],
    }


@pytest.mark.parametrize("target", ["folder", "model.json", "model.safetensors"])
def test_1_every_command_refuses_another_runs_files(tmp_path, checkpoint, other_run, data_root, capsys, target):
    before = tree_digest(other_run)
    out = other_run if target == "folder" else other_run / target
    commands = _commands(checkpoint, data_root, _results_csv(tmp_path / "results.csv"))
    commands["evaluate"] = ["evaluate", str(checkpoint), "--data-root", str(data_root), "--max-samples", "20"]
    for name, argv in commands.items():
        assert main([*argv, "--out", str(out)]) == 2, name
        line = error_line(capsys)
        assert str(out) in line, (name, line)
        assert tree_digest(other_run) == before, name  # not one byte changed, nothing added
    # the other run's checkpoint still loads
    assert main(["evaluate", str(other_run / "model"), "--data-root", str(data_root), "--max-samples", "20"]) == 0


def test_1_evaluate_rewrites_its_own_output_and_refuses_folders_and_links(tmp_path, checkpoint, data_root, capsys):
    out = tmp_path / "metrics" / "eval.json"
    argv = ["evaluate", str(checkpoint), "--data-root", str(data_root), "--max-samples", "20"]
    assert main([*argv, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["provenance"]["split"] == "test"
    assert main([*argv, "--out", str(out)]) == 0  # its own earlier output is replaced
    capsys.readouterr()
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "nowhere.json")
    for bad, words in [(tmp_path / "metrics", "is a folder"), (dangling, "symbolic link"), ("", "empty")]:
        assert main([*argv, "--out", str(bad)]) == 2
        assert words in error_line(capsys)
    assert not (tmp_path / "nowhere.json").exists()


def test_1_empty_out_is_refused_for_folder_commands(tmp_path, checkpoint, data_root, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["sweep", "--checkpoints", str(checkpoint), "--data-root", str(data_root), "--methods", ""]
    assert main([*argv, "--controls", "magnitude", "--out", ""]) == 2
    assert "--out" in error_line(capsys)
    assert not any(p.name.startswith(".medprune") or p.name == "run.json" for p in tmp_path.iterdir())


# 2. non-finite values refused at the boundary -------------------------------------------------------------------------
def _set_digest(weights: Path) -> None:
    """Record the weights file's current SHA-256 in its sidecar (a crafted file passes the digest check)."""
    sidecar = weights.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    sidecar.write_text(json.dumps(meta))


def _rewrite_weights(weights: Path, header: dict | bytes, data: bytes) -> None:
    """Replace a checkpoint's weights file with a hand-made safetensors file, its sidecar's SHA-256 updated."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    weights.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    _set_digest(weights)


def _state_file(weights: Path, change: dict[str, torch.Tensor]) -> None:
    """Rewrite the weights with some tensors replaced (written by safetensors itself), the sidecar's digest updated."""
    from safetensors.torch import load_file, save_file

    save_file({**load_file(str(weights)), **change}, str(weights))
    _rewrite_weights(weights, *_raw_parts(weights))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_2_non_finite_weights_are_refused_naming_the_tensor(tmp_path, checkpoint, data_root, capsys, bad):
    from safetensors.torch import load_file

    name = next(k for k, v in load_file(str(checkpoint)).items() if v.is_floating_point() and v.numel() > 1)
    tensor = load_file(str(checkpoint))[name].clone()
    tensor.view(-1)[1] = bad
    _state_file(checkpoint, {name: tensor})
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(checkpoint), "--data-root", str(data_root), "--out", str(out)]) == 2
    line = error_line(capsys)
    assert repr(name) in line and "NaN or infinite" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["train", "--dataset", "pneumoniamnist", "--lr", "nan"], "lr"),
        (["train", "--dataset", "pneumoniamnist", "--set", "weight_decay=inf"], "weight_decay"),
        (["report", "--results", "x.csv", "--tolerances", "0.01", "nan"], "tolerances[1]"),
        (["sweep", "--checkpoints", "c", "--set", "finetune_lr=-inf"], "finetune_lr"),
    ],
)
def test_2_non_finite_options_are_refused_naming_the_key(tmp_path, capsys, argv, key):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    line = error_line(capsys)
    assert f"{key} must be a finite number" in line
    assert not out.exists()


def test_2_rundir_refuses_a_non_finite_config_before_writing(tmp_path):
    from medprune.rundir import RunDirError

    with pytest.raises(RunDirError, match=r"finetune\.lr must be a finite number"):
        RunDir(tmp_path / "run", "compress", {"finetune": {"lr": float("nan")}})
    assert not (tmp_path / "run").exists()


def test_2_non_finite_scores_are_never_saved_and_a_cached_one_is_recomputed(tmp_path, monkeypatch):
    from medprune.scoring import store as store_module
    from medprune.scoring.request import ScoreRequest

    model = create_model("resnet_small", num_classes=2, image_size=16).eval()
    dataset = _TinySet(8)
    request = ScoreRequest("magnitude", "random")
    good = store_module.compute_scores(model, dataset, request, cache_dir=tmp_path)
    real_score = store_module.score

    def nan_score(*args, **kwargs):
        scores = real_score(*args, **kwargs)
        first = next(iter(scores))
        return {**scores, first: torch.full_like(scores[first], float("nan"))}

    monkeypatch.setattr(store_module, "score", nan_score)
    with pytest.raises(ValueError, match="NaN or infinite"):
        store_module.compute_scores(model, dataset, ScoreRequest("magnitude", "random", seed=1), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1 and not list(tmp_path.glob(".*.tmp"))
    # a cached file holding NaN (with a matching digest) is set aside and recomputed, never reused
    monkeypatch.setattr(store_module, "score", real_score)
    poisoned = {k: torch.full_like(v, float("nan")) for k, v in good.scores.items()}
    provenance = json.loads(good.path.with_suffix(".json").read_text())
    provenance.pop("file_sha256")
    store_module._save(good.path, poisoned, provenance)
    again = store_module.compute_scores(model, dataset, request, cache_dir=tmp_path)
    assert not again.reused
    assert all(torch.equal(again.scores[k], good.scores[k]) for k in good.scores)
    assert list(tmp_path.glob("*.corrupt-*"))


class _TinySet:
    """A minimal training split: ``n`` random 16-px images, two classes."""

    def __init__(self, n: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, 16, 16, generator=gen)
        self.labels = [i % 2 for i in range(n)]
        self.class_names = ["a", "b"]
        self.fingerprint = "tiny"

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


# 3. every tensor checked against the architecture -----------------------------------------------------------------
def _header_and_data(weights: Path) -> tuple[dict, bytes]:
    raw = weights.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def _crafted(checkpoint: Path, case: str) -> str:
    """Turn the checkpoint's weights into a crafted file; return the words the refusal must hold."""
    from safetensors.torch import load_file

    state = load_file(str(checkpoint))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 4)
    header, data = _header_and_data(checkpoint)
    if case == "int32":
        _state_file(checkpoint, {name: state[name].to(torch.int32)})
        return f"{name!r} is stored as I32"
    if case == "int64":
        _state_file(checkpoint, {name: state[name].to(torch.int64)})
        return f"{name!r} is stored as I64"
    if case == "float16":
        _state_file(checkpoint, {name: state[name].half()})
        return f"{name!r} is stored as F16"
    if case == "shape":
        _state_file(checkpoint, {name: state[name][:1].clone()})
        return f"{name!r} has shape"
    if case == "extra":
        _state_file(checkpoint, {"extra.weight": torch.zeros(3)})
        return "'extra.weight' is not part of 'resnet_small'"
    if case == "missing":
        from safetensors.torch import save_file

        save_file({k: v for k, v in state.items() if k != name}, str(checkpoint))
        _rewrite_weights(checkpoint, *_raw_parts(checkpoint))
        return f"{name!r} that 'resnet_small' needs is missing"
    if case == "duplicate":
        text = json.dumps(header)
        entry = json.dumps({name: header[name]})[1:-1]
        _rewrite_weights(checkpoint, (text[:-1] + ", " + entry + "}").encode(), data)
        return f"names tensor {name!r} twice"
    if case == "dtype_vs_data":
        header[name]["dtype"] = "F16"  # the bytes are float32: twice what F16 needs
        _rewrite_weights(checkpoint, header, data)
        return f"{name!r}: {header[name]['data_offsets'][1] - header[name]['data_offsets'][0]} data bytes but dtype F16"
    if case == "header_length":
        _rewrite_weights(checkpoint, b"{}", b"")
        checkpoint.write_bytes((10**12).to_bytes(8, "little") + b"{}")
        _set_digest(checkpoint)
        return "header length 1000000000000"
    raise AssertionError(case)


def _raw_parts(weights: Path) -> tuple[bytes, bytes]:
    raw = weights.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    return raw[8 : 8 + length], raw[8 + length :]


CRAFTED = ["int32", "int64", "float16", "shape", "extra", "missing", "duplicate", "dtype_vs_data", "header_length"]


@pytest.mark.parametrize("case", CRAFTED)
def test_3_crafted_weights_are_refused_naming_the_tensor(checkpoint, case):
    from medprune.checkpoint import load_checkpoint

    words = _crafted(checkpoint, case)
    with pytest.raises(ValueError) as caught:
        load_checkpoint(checkpoint)
    message = str(caught.value)
    assert words in message and str(checkpoint) in message and "\n" not in message


def test_3_crafted_weights_through_the_command_exit_2(tmp_path, checkpoint, data_root, capsys):
    words = _crafted(checkpoint, "int32")
    assert main(["evaluate", str(checkpoint), "--data-root", str(data_root), "--out", str(tmp_path / "e.json")]) == 2
    assert words in error_line(capsys)


def test_3_half_weights_load_where_the_sidecar_says_so(checkpoint):
    from safetensors.torch import load_file

    from medprune.checkpoint import load_checkpoint

    state = load_file(str(checkpoint))
    _state_file(checkpoint, {k: v.half() for k, v in state.items() if v.is_floating_point()})
    sidecar = checkpoint.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["weights_dtype"] = "float16"
    sidecar.write_text(json.dumps(meta))
    model, _ = load_checkpoint(checkpoint)
    loaded = model.state_dict()
    for key, value in state.items():
        assert loaded[key].dtype == value.dtype  # held as the architecture needs (float32)
        assert torch.equal(loaded[key], value.half().to(value.dtype))


# 4. run folders keyed by what the run computes ---------------------------------------------------------------------
def test_4_same_checkpoint_spelled_otherwise_and_lists_reordered_resume(tmp_path, monkeypatch):
    (tmp_path / "a" / "ck").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a")
    folder = tmp_path / "run"
    first = {"checkpoints": [str(tmp_path / "a" / "ck" / "model")], "rates": [0.5, 0.1], "seeds": [1, 0]}
    with RunDir(folder, "sweep", first):
        pass
    for spelling in ["ck/model", "./ck/model", "../a/ck/model", "ck/../ck/model"]:
        again = {"checkpoints": [spelling], "rates": [0.1, 0.5], "seeds": [0, 1]}
        with RunDir(folder, "sweep", again) as run:
            assert run.resumed
    from medprune.rundir import ConfigMismatchError

    with pytest.raises(ConfigMismatchError, match="rates"):
        RunDir(folder, "sweep", {**first, "rates": [0.1, 0.6]}).__enter__()


def test_4_a_run_refused_before_any_output_leaves_a_folder_the_corrected_run_reuses(tmp_path):
    from medprune.config import save_config  # noqa: F401  (the runner writes config.yaml first)

    folder = tmp_path / "train"
    with pytest.raises(ValueError, match="empty data root"):
        with RunDir(folder, "train", {"data_root": ""}):
            (folder / "config.yaml").write_text("data_root: ''\n")
            raise ValueError("empty data root")
    assert not (folder / "run.json").exists() and not (folder / "config.yaml").exists()
    with RunDir(folder, "train", {"data_root": "/data"}) as run:  # the corrected command: not refused
        (folder / "model.safetensors").write_bytes(b"x")
    assert not run.resumed
    # a run that wrote outputs before failing keeps its record (it resumes)
    with pytest.raises(ValueError):
        with RunDir(folder, "train", {"data_root": "/data"}):
            raise ValueError("later failure")
    assert json.loads((folder / "run.json").read_text())["history"][-1]["status"] == "failed: ValueError"


def test_4_train_with_an_empty_data_root_leaves_no_record(tmp_path, capsys):
    out, empty = tmp_path / "pneumonia", tmp_path / "empty"
    empty.mkdir()
    argv = ["train", "--dataset", "pneumoniamnist", "--data-root", str(empty), "--out", str(out)]
    assert main(argv) == 2
    error_line(capsys)
    assert not (out / "run.json").exists() and not (out / "config.yaml").exists()


def test_4_leftover_temporary_files_are_removed_on_resume(tmp_path):
    folder = tmp_path / "run"
    with RunDir(folder, "sweep", {"rates": [0.5]}):
        (folder / "results.csv").write_text("a\n")
    (folder / "scores").mkdir()
    leftovers = [folder / ".results.csv.abc123.tmp", folder / "scores" / ".lrp_random_x.safetensors.99.tmp"]
    kept = folder / ".old-20260101T000000Z" / ".results.csv.old.tmp"
    kept.parent.mkdir()
    for path in [*leftovers, kept]:
        path.write_text("partial")
    with RunDir(folder, "sweep", {"rates": [0.5]}):
        assert not any(p.exists() for p in leftovers)
    assert kept.exists() and (folder / "results.csv").read_text() == "a\n"


# 5. out of space: one line naming the file, every file atomic, a rerun resumes --------------------------------------
def test_5_disk_full_names_the_file_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import errno
    import os

    from medprune.rundir import DiskFullError, write_json_atomic

    target = tmp_path / "manifest.json"
    target.write_text('{"old": 1}\n')

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(DiskFullError, match=str(target)):
        write_json_atomic(target, {"new": 2})
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def _sweep(checkpoint: Path, out: Path, data_root: Path) -> list[str]:
    argv = ["sweep", "--checkpoints", str(checkpoint), "--out", str(out), "--data-root", str(data_root)]
    return [*argv, "--methods", "", "--controls", "magnitude", "--rates", "0.5", "--set", "seeds=0"]


def _table(folder: Path) -> list[dict]:
    rows = list(csv.DictReader((folder / "results.csv").open()))
    timing = {"seconds", "finished_at"}  # when and how long, not what was measured
    return sorted(({k: v for k, v in r.items() if k not in timing} for r in rows), key=lambda r: r["row_id"])


@pytest.mark.slow
@pytest.mark.parametrize("fault", [1, 2, 3, 5, 8])
def test_5_a_sweep_that_meets_a_full_disk_exits_2_and_resumes_to_the_clean_table(
    tmp_path, checkpoint, data_root, capsys, monkeypatch, fault
):
    import errno
    import os

    extra: list[str] = []
    clean = tmp_path / "clean"
    assert main([*_sweep(checkpoint, clean, data_root), *extra]) == 0
    real_replace, calls = os.replace, []

    def replace_until_full(src, dst):
        calls.append(dst)
        if len(calls) == fault:  # as the kernel reports it: with the file being written
            raise OSError(errno.ENOSPC, "No space left on device", str(src))
        return real_replace(src, dst)

    faulty = tmp_path / "faulty"
    monkeypatch.setattr(os, "replace", replace_until_full)
    assert main([*_sweep(checkpoint, faulty, data_root), *extra]) == 2
    line = error_line(capsys)
    assert "no space left" in line and str(faulty) in line
    monkeypatch.setattr(os, "replace", real_replace)
    assert main([*_sweep(checkpoint, faulty, data_root), *extra]) == 0
    assert _table(faulty) == _table(clean)
    assert not list(faulty.rglob(".*.tmp"))
