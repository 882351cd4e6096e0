"""Issue 14, fuzz: malformed sidecars, configs and ``.npz`` files end in a user error (a ``ValueError`` or a
``FileNotFoundError``: exit code 2 in the CLI) or load; never another exception, and the inputs are never changed.
The ``test_cli_*`` cases run the same inputs through ``medprune``: exit 0 or 2, nothing changed outside ``--out``."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medprune.checkpoint import load_checkpoint, save_checkpoint
from medprune.cli.main import main
from medprune.config import build_config
from medprune.data import load_dataset
from medprune.models import create_model

USER_ERRORS = (ValueError, FileNotFoundError)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def snapshot(folder: Path) -> dict[str, str]:
    files = (p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def expect_user_error_or_success(call: Any) -> None:
    try:
        call()
    except USER_ERRORS:
        pass


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ck")
    model = create_model("resnet_small", num_classes=2, in_channels=3, image_size=28)
    save_checkpoint(folder / "model", model, {"class_names": ["a", "b"], "pruned": None})
    return folder


def _mutate(meta: dict, data: st.DataObject) -> dict:
    target: Any = meta
    fields = ["model", "name", "num_classes", "image_size", "in_channels", "weights_file", "weights_sha256"]
    fields += ["class_names", "format", "pruned"]
    keys = data.draw(st.lists(st.sampled_from(fields), min_size=1, max_size=2))
    for key in keys[:-1]:
        if isinstance(target, dict) and isinstance(target.get(key), dict):
            target = target[key]
    action = data.draw(st.sampled_from(["set", "delete", "extra"]))
    if isinstance(target, dict):
        if action == "set":
            target[keys[-1]] = data.draw(json_values)
        elif action == "delete":
            target.pop(keys[-1], None)
        else:
            target[data.draw(st.text(min_size=1, max_size=6))] = data.draw(json_values)
    return meta


@FUZZ
@given(data=st.data(), raw=st.one_of(st.none(), st.binary(max_size=40)), cut=st.integers(0, 400))
def test_fuzzed_checkpoint_sidecars(tmp_path_factory, saved_checkpoint, data, raw, cut) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    text = (saved_checkpoint / "model.json").read_bytes()
    weights = (saved_checkpoint / "model.safetensors").read_bytes()
    if raw is not None:
        blob = raw if data.draw(st.booleans()) else text[:cut]
    else:
        blob = json.dumps(_mutate(json.loads(text), data)).encode()
    (folder / "model.json").write_bytes(blob)
    (folder / "model.safetensors").write_bytes(weights)
    before = snapshot(folder.parent)
    expect_user_error_or_success(lambda: load_checkpoint(folder / "model.json"))
    assert snapshot(folder.parent) == before


@dataclass
class FuzzConfig:
    epochs: int = 1
    lr: float = 0.1
    scope: Literal["global", "layer"] = "global"
    rates: list[float] = field(default_factory=lambda: [0.1])
    options: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    amp: bool = False


config_keys = st.sampled_from(["epochs", "lr", "scope", "rates", "options", "seed", "amp", "unknown", "1"])


@FUZZ
@given(
    mapping=st.dictionaries(config_keys | st.integers(0, 3), json_values, max_size=4),
    text=st.text(max_size=60),
    raw=st.binary(max_size=30),
    kind=st.sampled_from(["mapping", "text", "raw"]),
)
def test_fuzzed_config_files(tmp_path_factory, mapping, text, raw, kind) -> None:
    folder = tmp_path_factory.mktemp("cfg")
    path = folder / "config.yaml"
    if kind == "mapping":
        path.write_text(yaml.safe_dump(mapping))
    elif kind == "text":
        path.write_text(text)
    else:
        path.write_bytes(raw)
    before = snapshot(folder)
    expect_user_error_or_success(lambda: build_config(FuzzConfig, path))
    assert snapshot(folder) == before


@pytest.fixture(scope="module")
def real_arrays(data_root: Path) -> dict[str, np.ndarray]:
    with np.load(data_root / "breastmnist" / "breastmnist.npz") as real:
        return {key: real[key][:8] for key in real.files}


label_arrays = st.one_of(
    st.just(np.array([[0], [1]] * 4, dtype=np.uint8)),
    st.lists(st.floats(-2, 3) | st.just(float("nan")), max_size=9).map(lambda v: np.array(v)[:, None]),
    st.lists(st.integers(-2, 3), min_size=0, max_size=9).map(np.array),
    st.just(np.array([[0], [1], "x", None] * 2, dtype=object)),
    st.just(np.array(["0", "1"] * 4)),
    st.just(np.zeros((8, 2), dtype=np.int64)),
)
image_arrays = st.one_of(
    st.just(np.zeros((8, 28, 28), dtype=np.uint8)),
    st.just(np.zeros((0, 28, 28), dtype=np.uint8)),
    st.just(np.zeros((8, 28, 28), dtype=np.float32)),
    st.just(np.zeros((8, 28), dtype=np.uint8)),
    st.just(np.array([np.zeros((2, 2))] * 8, dtype=object)),
)


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from(["train_images", "val_images", "test_images", "train_labels", "val_labels", "test_labels"]),
        st.one_of(label_arrays, image_arrays, st.none()),
        max_size=3,
    ),
    damage=st.sampled_from(["none", "truncate", "garbage"]),
)
def test_fuzzed_npz_files(tmp_path_factory, monkeypatch, real_arrays, changes, damage) -> None:
    monkeypatch.setenv("MEDPRUNE_OFFLINE", "1")
    folder = tmp_path_factory.mktemp("npz")
    arrays = {k: v for k, v in {**real_arrays, **changes}.items() if v is not None}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    blob = buffer.getvalue()
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "garbage":
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            names = archive.namelist()
        blob = blob.replace(names[0].encode(), names[0].encode()[::-1], 1)
    (folder / "breastmnist.npz").write_bytes(blob)
    before = snapshot(folder)
    expect_user_error_or_success(lambda: load_dataset("breastmnist", folder))
    assert snapshot(folder) == before


# the same inputs through the command: exit 0 or 2 (never an uncaught exception, which would exit 1), and nothing
# outside the output folder changes
CLI_FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def run_cli(argv: list[str], inputs: Path, out: Path) -> int:
    before = {k: v for k, v in snapshot(inputs).items() if not (inputs / k).is_relative_to(out)}
    code = main(argv)
    after = {k: v for k, v in snapshot(inputs).items() if not (inputs / k).is_relative_to(out)}
    assert after == before
    return code


@CLI_FUZZ
@given(data=st.data())
def test_cli_fuzzed_sidecars_exit_0_or_2(tmp_path_factory, saved_checkpoint, data_root, monkeypatch, data) -> None:
    monkeypatch.setenv("MEDPRUNE_OFFLINE", "1")
    folder = tmp_path_factory.mktemp("cli-ck")
    meta = json.loads((saved_checkpoint / "model.json").read_text())
    meta["dataset"] = {"name": "pneumoniamnist"}
    (folder / "model.json").write_text(json.dumps(_mutate(meta, data)))
    (folder / "model.safetensors").write_bytes((saved_checkpoint / "model.safetensors").read_bytes())
    out = folder / "out"
    argv = ["evaluate", str(folder / "model.json"), "--data-root", str(data_root), "--max-samples", "8"]
    assert run_cli([*argv, "--out", str(out / "eval.json")], folder, out) in (0, 2)


@CLI_FUZZ
@given(
    mapping=st.dictionaries(st.sampled_from(["rates", "methods", "seeds", "scope", "bogus"]), json_values, max_size=3),
    text=st.text(max_size=40),
    raw=st.booleans(),
)
def test_cli_fuzzed_config_files_exit_0_or_2(tmp_path_factory, monkeypatch, mapping, text, raw) -> None:
    folder = tmp_path_factory.mktemp("cli-cfg")
    monkeypatch.chdir(folder)
    path = folder / "sweep.yaml"
    path.write_text(text if raw else yaml.safe_dump(mapping))
    out = folder / "out"
    assert run_cli(["sweep", "--config", str(path), "--out", str(out)], folder, out) == 2  # never a valid sweep


@CLI_FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from(["train_labels", "val_labels", "test_labels", "test_images"]),
        st.one_of(label_arrays, image_arrays, st.none()),
        max_size=2,
    )
)
def test_cli_fuzzed_npz_files_exit_0_or_2(tmp_path_factory, monkeypatch, real_arrays, changes) -> None:
    monkeypatch.setenv("MEDPRUNE_OFFLINE", "1")
    folder = tmp_path_factory.mktemp("cli-npz")
    model = create_model("resnet_small", num_classes=2, in_channels=3, image_size=28)
    meta = {"class_names": ["malignant", "normal, benign"], "dataset": {"name": "breastmnist"}}
    save_checkpoint(folder / "ck" / "model", model, meta)
    np.savez(folder / "breastmnist.npz", **{k: v for k, v in {**real_arrays, **changes}.items() if v is not None})
    out = folder / "out"
    argv = ["evaluate", str(folder / "ck" / "model.json"), "--data-root", str(folder), "--out", str(out / "e.json")]
    assert run_cli(argv, folder, out) in (0, 2)
