"""``medprune score`` end to end on PneumoniaMNIST: every registered method x 3 samplings, then all reused."""

from __future__ import annotations

import json

import pytest

from medprune.checkpoint import save_checkpoint
from medprune.cli.main import main
from medprune.data import load_dataset
from medprune.models import create_model
from medprune.scoring.registry import available_scorers, scorer_entry
from medprune.scoring.store import load_scores

SAMPLINGS = ["random", "confidence", "clustering"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, data_root):
    splits = load_dataset("pneumoniamnist", data_root, image_size=28)
    model = create_model("resnet_small", num_classes=2, image_size=28)
    meta = {
        "class_names": splits.class_names,
        "dataset": {"name": "pneumoniamnist", "fingerprint": splits.fingerprint},
        "train_config": {"dataset": "pneumoniamnist", "data_root": str(data_root)},
    }
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model", model, meta), model


def test_scores_every_method_and_sampling_then_reuses_them(checkpoint, tmp_path, capsys):
    path, model = checkpoint
    out = tmp_path / "scores"
    argv = [
        "score",
        str(path),
        "--out",
        str(out),
        "--n-per-class",
        "2",
        "--candidate-limit",
        "8",
        "--option",
        "ig.steps=2",
        "--option",
        "ig.chunk_size=8",
    ]
    assert main(argv) == 0
    manifest = json.loads((out / "scores.json").read_text())
    methods = available_scorers()
    assert {(r["method"], r["sampling"]) for r in manifest["scores"]} == {(m, s) for m in methods for s in SAMPLINGS}
    data_free = [m for m in methods if scorer_entry(m).data_free]
    files = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(files) == (len(methods) - len(data_free)) * 3 + len(data_free)  # data-free files ignore the sampling
    for row in manifest["scores"]:
        assert row["reused"] == (row["data_free"] and row["sampling"] != SAMPLINGS[0])
        assert row["samples"] == (0 if row["data_free"] else 4)
        record = load_scores(out / row["file"], model)  # validates groups and sizes against the model
        assert all(v.isfinite().all() for v in record.scores.values())
        if row["method"] == "ig":
            assert record.provenance["resolved_options"]["steps"] == 2
    first = capsys.readouterr().out
    assert "clustering" in first and "computed" in first

    assert main(argv) == 0
    again = json.loads((out / "scores.json").read_text())
    assert all(r["reused"] for r in again["scores"])
    assert sorted(p.name for p in out.glob("*.safetensors")) == files


def test_unknown_methods_and_samplings_are_refused_with_the_valid_ones(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    assert main(["score", str(path), "--out", str(tmp_path), "--methods", "ig,gradcam"]) == 2
    err = capsys.readouterr().err
    assert "unknown method(s) ['gradcam']" in err and "valid methods: " + ", ".join(available_scorers()) in err
    assert main(["score", str(path), "--out", str(tmp_path), "--samplings", "random,entropy"]) == 2
    assert "valid samplings: random, confidence, clustering" in capsys.readouterr().err
    assert main(["score", str(path), "--out", str(tmp_path), "--option", "ig.stepz=3"]) == 2
    assert "unknown option(s) ['stepz'] for method 'ig'" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.safetensors"))
