"""medprune compress: the card's numbers are the ones measured (recomputed here), ONNX agrees with PyTorch, the test
split is read only after every choice, and a SIGKILLed run resumes to the same model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

import medprune.runs.compress as compress_module
from medprune.checkpoint import load_checkpoint, save_checkpoint
from medprune.checkpoint.with_data import splits_for_checkpoint
from medprune.cli.main import main
from medprune.config import build_config
from medprune.data import stack_samples
from medprune.metrics import metrics_from_predictions, predict
from medprune.models import create_model
from medprune.pruning import model_cost, run_onnx
from medprune.runs.compress import CompressConfig, compress

QUICK = dict(
    method="magnitude",
    rates=[0.3, 0.5],
    metric="accuracy",
    tolerance=0.9,  # a random-init model: every rate is "within tolerance"; the mechanics are under test
    decision_rule="point",
    max_class_recall_drop=1.0,
    search_recovery="finetune",
    finetune_epochs=2,
    max_train_samples=48,
    recalibration_samples=32,
    batch_size=16,
    latency_repeats=1,
)

RESUME = {**QUICK, "finetune_epochs": 4, "rates": [0.2, 0.3, 0.4]}


@pytest.fixture()
def checkpoint(tmp_path: Path) -> str:
    torch.manual_seed(0)
    model = create_model("resnet_small", num_classes=2, image_size=28)
    meta = {"class_names": ["normal", "pneumonia"], "dataset": {"name": "pneumoniamnist"}}
    return str(save_checkpoint(tmp_path / "train" / "model", model, meta))


def test_card_numbers_are_the_measured_ones(tmp_path: Path, checkpoint: str, data_root: Path, monkeypatch) -> None:  # noqa: ANN001
    events: list[str] = []
    search, stack = compress_module.search, compress_module.stack_samples

    def spy_search(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        events.append("search")
        return search(*args, **kwargs)

    def spy_stack(dataset, indices, **kwargs):  # noqa: ANN001, ANN003, ANN202
        events.append(f"stack {len(dataset)}")
        return stack(dataset, indices, **kwargs)

    monkeypatch.setattr(compress_module, "search", spy_search)
    monkeypatch.setattr(compress_module, "stack_samples", spy_stack)
    out = tmp_path / "out"
    result = compress(checkpoint, str(out), data_root=str(data_root), **QUICK)
    splits = splits_for_checkpoint(
        json.loads(Path(checkpoint).with_suffix(".json").read_text()), data_root=str(data_root)
    )
    assert events.index(f"stack {len(splits.test)}") > events.index("search"), events  # test read after the choice
    assert events.count(f"stack {len(splits.test)}") == 1

    card = json.loads((out / "card.json").read_text())
    assert result.rate == 0.5 and card["choice"]["chosen rate"] == 0.5
    assert [row["rate"] for row in card["search"]] == [0.3, 0.5]
    # the written model is the smaller one, and the ONNX file agrees with it to 1e-4
    small, meta = load_checkpoint(out / "model.safetensors")
    test = stack_samples(splits.test, range(len(splits.test)))
    with torch.no_grad():
        torch.testing.assert_close(small(test[0][:32]), result.model(test[0][:32]))
        assert float((run_onnx(out / "model.onnx", test[0][:32]) - small(test[0][:32])).abs().max()) <= 1e-4
    # sizes, recomputed
    original, _ = load_checkpoint(checkpoint)
    before, after = model_cost(original), model_cost(small)
    assert card["totals"]["MACs before"] == before["macs"] and card["totals"]["MACs after"] == after["macs"]
    assert card["totals"]["params after"] == after["params"] < before["params"]
    removed = sum(int((~m).sum()) for m in result.masks.values()) / sum(m.numel() for m in result.masks.values())
    assert card["totals"]["units removed (fraction)"] == pytest.approx(removed)
    # test metrics and Wilson intervals, recomputed from the reloaded model
    probs, truth = predict(small, test)
    metrics = metrics_from_predictions(probs, truth, ["normal", "pneumonia"])
    assert card["test_compressed"]["balanced_accuracy"] == pytest.approx(metrics["balanced_accuracy"])
    predictions = probs.argmax(1)
    for c, row in enumerate(card["test_compressed"]["per_class"]):
        k, n = int(((predictions == c) & (truth == c)).sum()), int((truth == c).sum())
        assert row["sensitivity"] == pytest.approx(k / n)
        ci = binomtest(k, n).proportion_ci(method="wilson")
        assert row["sensitivity_ci"] == pytest.approx([ci.low, ci.high])
    # every number of the card appears in card.md
    text = (out / "card.md").read_text()
    assert f"{card['totals']['MACs after']:,}" in text and f"{metrics['balanced_accuracy']:.3f}" in text
    assert meta["compression"]["rate"] == 0.5 and meta["pruned"]["groups"]


def _run_in_child(checkpoint: str, out: Path, data_root: Path) -> subprocess.Popen:
    code = (
        "import json, sys; from medprune.runs.compress import compress; "
        "compress(sys.argv[1], sys.argv[2], data_root=sys.argv[3], **json.loads(sys.argv[4]))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", code, checkpoint, str(out), str(data_root), json.dumps(RESUME)]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_resume_after_sigkill_gives_the_same_model(tmp_path: Path, checkpoint: str, data_root: Path) -> None:
    options = RESUME
    child = _run_in_child(checkpoint, tmp_path / "killed", data_root)
    log = tmp_path / "killed" / "search.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and child.poll() is None:
        if log.is_file() and log.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    assert child.poll() is None, "the child finished before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    rows_before = log.read_text().splitlines()
    assert 1 <= len(rows_before) < 3
    resumed = compress(checkpoint, str(tmp_path / "killed"), data_root=str(data_root), **options)
    rows_after = (tmp_path / "killed" / "search.jsonl").read_text().splitlines()
    assert rows_after[: len(rows_before)] == rows_before and len(rows_after) == 3  # kept rows were not re-measured
    straight = compress(checkpoint, str(tmp_path / "straight"), data_root=str(data_root), **options)
    assert resumed.rate == straight.rate
    for (key, p), q in zip(resumed.model.state_dict().items(), straight.model.state_dict().values()):
        assert torch.equal(p, q), key
    assert resumed.record.test_compressed == straight.record.test_compressed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--metric", "f1"], "metric='f1' is not allowed; valid values: balanced_accuracy"),
        (["--tolerance", "2"], "tolerance must be in [0, 1)"),
        (["--set", "finetune_epochs=0"], "search_recovery=finetune needs finetune_epochs >= 1"),
        (["--set", "finetune_steps=0"], "finetune_steps=0 is not allowed; valid values: ints >= 1"),
    ],
)
def test_bad_options_exit_2_before_work(tmp_path: Path, checkpoint: str, argv: list[str], message: str, capsys) -> None:  # noqa: ANN001
    code = main(["compress", checkpoint, "--out", str(tmp_path / "out"), *argv])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_writes_the_deliverable(tmp_path: Path, checkpoint: str, data_root: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "cli"
    argv = ["compress", checkpoint, "--out", str(out), "--data-root", str(data_root), "--rate", "0.4"]
    argv += ["--metric", "accuracy", "--tolerance", "0.9", "--set", "latency_repeats=1", "--set", "method=magnitude"]
    argv += ["--set", "max_train_samples=32", "--set", "finetune_steps=2", "--set", "recalibration_samples=16"]
    assert main(argv) == 0
    assert "rate 0.40" in capsys.readouterr().out
    for name in ("model.safetensors", "model.json", "model.onnx", "card.json", "card.md", "search.jsonl"):
        assert (out / name).is_file(), name
    assert CompressConfig(checkpoint=checkpoint).metric == "balanced_accuracy"
    card = json.loads((out / "card.json").read_text())
    assert card["choice"]["fine-tune epochs"] == 2  # 2 steps, one step of batch 32 per epoch of 32 images
    assert np.isfinite(json.loads((out / "card.json").read_text())["latency"][1]["speedup"])


def test_default_recipe_is_label_free_distillation_with_a_step_budget() -> None:
    config = CompressConfig(checkpoint="x")
    recipe = config.finetune
    assert (recipe.distill, recipe.distill_weight, config.search_recovery, recipe.augment) == (
        True,
        1.0,
        "finetune",
        False,
    )
    assert recipe.epochs_for(4708) == 3 and recipe.epochs_for(546) == 17  # ceil(300 / ceil(n / 32))
    # today's flat keys still set the recipe's fields
    assert build_config(CompressConfig, overrides={"finetune_steps": 32}).finetune.epochs_for(1024) == 1
    assert build_config(CompressConfig, overrides={"finetune_epochs": 5}).finetune.epochs_for(10) == 5  # explicit wins


def test_compress_is_the_package_entry_point_and_import_medprune_stays_light() -> None:
    import medprune  # noqa: PLC0415 - the package itself is what is under test

    assert medprune.compress is compress and medprune.CompressConfig is CompressConfig
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = medprune.nonexistent
    heavy = "('medprune.runs.compress', 'torch_pruning', 'onnx')"
    code = f"import sys, medprune.models; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # a submodule import does not drag the compress stack in
