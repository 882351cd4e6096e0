"""``medprune train`` / ``medprune evaluate`` end to end on the real PneumoniaMNIST file with a tiny model."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from medprune.cli.main import main


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP spin-waiting makes 2 threads many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("run")
    config = out / "base.yaml"
    config.write_text(yaml.safe_dump({"dataset": "pneumoniamnist", "epochs": 3, "lr": 0.01, "batch_size": 16}))
    argv = [
        "train",
        "--config",
        str(config),
        "--data-root",
        str(data_root),
        "--model",
        "resnet_small",
        "--epochs",
        "1",
        "--max-train-samples",
        "160",
        "--set",
        "max_eval_samples=64",
        "--set",
        "lr=0.002",
        "--out-dir",
        str(out),
        "--no-progress",
    ]
    return out, main(argv)


def test_train_writes_outputs_and_resolved_config(trained):
    out, code = trained
    assert code == 0
    assert {p.name for p in out.iterdir()} >= {
        "config.yaml",
        "history.csv",
        "metrics.json",
        "model.json",
        "model.safetensors",
    }
    config = yaml.safe_load((out / "config.yaml").read_text())
    # defaults <- YAML <- flags <- --set
    assert config["epochs"] == 1 and config["batch_size"] == 16 and config["lr"] == 0.002
    assert config["max_train_samples"] == 160 and config["model"] == "resnet_small"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["n"] == 64 and 0.0 <= metrics["test"]["accuracy"] <= 1.0
    meta = json.loads((out / "model.json").read_text())
    assert meta["dataset"]["name"] == "pneumoniamnist" and meta["class_names"] == ["normal", "pneumonia"]
    assert meta["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_evaluate_reproduces_training_test_metrics(trained, tmp_path):
    out, _ = trained
    target = tmp_path / "eval.json"
    code = main(["evaluate", str(out / "model.safetensors"), "--max-samples", "64", "--out", str(target)])
    assert code == 0
    result = json.loads(target.read_text())
    expected = json.loads((out / "metrics.json").read_text())["test"]
    assert result["n"] == 64 and result["accuracy"] == pytest.approx(expected["accuracy"])
    assert result["confusion_matrix"] == expected["confusion_matrix"]
    assert result["provenance"]["dataset"] == "pneumoniamnist" and len(result["provenance"]["model_checksum"]) == 64
    assert (tmp_path / "eval.config.yaml").is_file()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--set", "epoch=3"], r"unknown option(s) ['epoch'] for TrainConfig; valid options: "),
        (["train", "--select-on", "f1"], "select_on='f1' is not allowed; valid values: auroc, accuracy"),
        (["train", "--model", "resnet9000"], "unknown model 'resnet9000'; valid models: "),
        (["train", "--epochs", "two"], "epochs must be int, got 'two'"),
        (["train", "--set", "lr"], "--set expects key=value, got 'lr'"),
        (["evaluate", "model.pt"], "refusing a pickle-based checkpoint (.pt)"),
        (["evaluate"], "checkpoint is required"),
        (["evaluate", "x.safetensors", "--split", "dev"], "split='dev' is not allowed; valid values: test, val, train"),
        (["evaluate", "missing/model.safetensors"], "missing/model.json does not exist"),
    ],
)
def test_bad_options_exit_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "runs").exists(), "nothing may be written for a refused config"
