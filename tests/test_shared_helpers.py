"""provenance, runtime and options: the shared helpers every runner and library module uses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from medprune.config import ConfigError
from medprune.options import NORMALIZATIONS, SAMPLINGS, SIGNS, check_option, check_options
from medprune.provenance import file_sha256, model_checksum, offline_flag, online, package_versions, to_jsonable
from medprune.runtime import eval_mode, model_device, seed_everything


def test_to_jsonable_is_strict_json() -> None:
    value = {"a": float("nan"), "b": np.float32(1.5), "c": torch.tensor([1.0, float("inf")]), 3: (np.int64(2),)}
    out = to_jsonable(value)
    assert json.loads(json.dumps(out, allow_nan=False)) == {"a": None, "b": 1.5, "c": [1.0, None], "3": [2]}
    digest = to_jsonable({"x": torch.arange(4.0)}, digest_tensors=True)["x"]
    assert digest["shape"] == [4] and len(digest["tensor_sha256"]) == 64


def test_model_checksum_follows_weights() -> None:
    model = nn.Linear(3, 2)
    first = model_checksum(model)
    assert first == model_checksum(model)
    with torch.no_grad():
        model.weight[0, 0] += 1
    assert model_checksum(model) != first


def test_file_sha256_and_versions(tmp_path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    versions = package_versions(("torch", "surely-not-an-installed-package"))
    assert versions["torch"] and versions["surely-not-an-installed-package"] is None


def test_offline_flag_short_circuits(monkeypatch) -> None:
    monkeypatch.setenv("MEDPRUNE_OFFLINE", "1")
    assert offline_flag() == "MEDPRUNE_OFFLINE"
    assert online("example.invalid") is False


def test_eval_mode_restores_even_on_error() -> None:
    model = nn.Sequential(nn.Dropout())
    with eval_mode(model):
        assert not model.training
    assert model.training
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("boom")
    assert model.training
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training


def test_seed_everything_repeats() -> None:
    seed_everything(3)
    a = torch.rand(3)
    seed_everything(3)
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(ValueError):
        seed_everything(-1)


def test_check_option_names_allowed_values() -> None:
    assert check_option("sign", "abs", SIGNS) == "abs"
    with pytest.raises(ConfigError, match="normalize='x' is not allowed; valid values: none, total, max, l2"):
        check_option("normalize", "x", NORMALIZATIONS)
    assert check_options("samplings", ["random"], SAMPLINGS) == ["random"]
    with pytest.raises(ConfigError, match="valid values: random, confidence, clustering"):
        check_options("samplings", ["nope"], SAMPLINGS)
    with pytest.raises(ConfigError, match="nothing"):
        check_options("samplings", [], SAMPLINGS, required=True)


def test_model_device_reads_parameters_then_buffers_then_defaults_to_cpu() -> None:
    norm = torch.nn.BatchNorm1d(3, affine=False)  # buffers only: must not fall through to a parameter lookup error
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(norm) == norm.running_mean.device
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")
