"""compress with fold_batchnorm: the folded model ships, reloads to the same outputs, and the card says so apart from
pruning; a sidecar that lists the wrong BatchNorms is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from medprune.checkpoint import load_checkpoint, save_checkpoint
from medprune.compression.config import CompressConfig
from medprune.compression.evidence import FOLD_TOLERANCE
from medprune.models import create_model
from medprune.pruning import fold_batchnorms, model_cost, run_onnx
from medprune.pruning.physical import apply_structure
from medprune.runs.compress import compress


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _checkpoint(name: str, folder: Path) -> str:
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, image_size=28).eval()  # recalibration gives its BatchNorms statistics
    meta = {"class_names": ["malignant", "normal, benign"], "dataset": {"name": "breastmnist"}}
    return str(save_checkpoint(folder / "model", model, meta))


@pytest.fixture(scope="module")
def folded_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> tuple[Path, object]:
    tmp = tmp_path_factory.mktemp("fold")
    checkpoint = _checkpoint("resnet_small", tmp / "train")
    options = dict(method="magnitude", rates=[0.5], metric="accuracy", tolerance=0.9, decision_rule="point")
    options.update(max_class_recall_drop=1.0, search_recovery="recalibrate", finetune_epochs=0)
    options.update(recalibration_samples=32, latency_repeats=1, fold_batchnorm=True)
    options.update(calibrate="temperature", quantize="int8", calibration_samples=40, export="monai")
    return tmp / "out", compress(checkpoint, str(tmp / "out"), data_root=str(data_root), **options)


def test_the_folded_model_ships_and_reloads_to_the_same_outputs(folded_run: tuple[Path, object]) -> None:
    out, result = folded_run
    assert _norms(result.model) == 0
    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["compression"]["folded_batchnorms"] is True
    assert sidecar["folded_batchnorms"] == result.model.medprune_folded and sidecar["folded_batchnorms"]
    reloaded, _ = load_checkpoint(out / "model.safetensors")
    assert _norms(reloaded) == 0
    x = torch.randn(5, 3, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(reloaded(x), result.model(x))
        assert float((run_onnx(out / "model.onnx", x) - reloaded(x)).abs().max()) <= 1e-4
    checks = result.record.checks
    assert checks["ONNX within tolerance"] is True
    assert 0 <= checks["folded vs masked max |difference|"] <= FOLD_TOLERANCE
    assert checks[f"folded within {FOLD_TOLERANCE:g} of masked"] is True


def test_the_card_counts_removal_and_states_the_folding_apart(folded_run: tuple[Path, object]) -> None:
    out, result = folded_run
    sidecar = json.loads((out / "model.json").read_text())
    unfolded = apply_structure(create_model("resnet_small", num_classes=2, image_size=28), sidecar["pruned"])
    record = result.record
    assert _norms(unfolded) == record.folding["BatchNorm layers folded"] > 0
    assert record.totals["params after"] == model_cost(unfolded)["params"] == record.folding["params after removal"]
    assert record.folding["params shipped"] == model_cost(result.model)["params"] < record.totals["params after"]
    card = (out / "card.md").read_text()
    assert "**BatchNorm folded (not pruning):**" in card and "### BatchNorm folding" in card
    assert json.loads((out / "card.json").read_text())["folding"]["BatchNorm layers folded"] > 0
    explanations = record.explanations  # measured on the folded model, or said why not
    assert explanations.get("per_image") or f"Not measured: {explanations['skipped']}" in card


def test_the_bundle_and_the_int8_evidence_are_of_the_folded_model(folded_run: tuple[Path, object]) -> None:
    out, result = folded_run
    scripted = torch.jit.load(str(out / "bundle" / "models" / "model.ts"))
    assert "batch_norm" not in scripted.inlined_graph.str()
    x = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), result.model(x))
    assert result.record.quantization["equivalence"]["test"]  # int8 judged against the folded fp32 model
    assert result.record.calibration["temperature"] is not None


def test_fold_batchnorm_is_off_by_default_and_an_unfolded_sidecar_has_no_folding_key(tmp_path: Path) -> None:
    assert CompressConfig(checkpoint="x").fold_batchnorm is False
    sidecar = json.loads(Path(_checkpoint("vgg_small", tmp_path)).with_suffix(".json").read_text())
    assert "folded_batchnorms" not in sidecar


def test_a_sidecar_listing_other_batchnorms_is_refused(tmp_path: Path) -> None:
    model, _ = load_checkpoint(_checkpoint("vgg_small", tmp_path / "a"))
    path = save_checkpoint(tmp_path / "b" / "model", fold_batchnorms(model), {"class_names": ["a", "b"]})
    reloaded, _ = load_checkpoint(path)
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(reloaded(x), fold_batchnorms(model)(x))
    sidecar_path = path.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["folded_batchnorms"] = sidecar["folded_batchnorms"][1:]
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match="folded_batchnorms lists"):
        load_checkpoint(path)
    sidecar["folded_batchnorms"] = "features.1"
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match="must be a list of BatchNorm paths"):
        load_checkpoint(path)
