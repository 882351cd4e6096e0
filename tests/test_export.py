"""export_onnx: pruned models run in onnxruntime and match torch (atol 1e-4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medprune.compression.evidence import ONNX_TOLERANCE, onnx_tolerance
from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.pruning import export as export_module
from medprune.pruning.export import export_onnx, run_onnx
from medprune.pruning.masks import masks_from_scores
from medprune.pruning.physical import coupled_groups, remove_units

pytest.importorskip("onnxruntime")


def _pruned(name: str) -> torch.nn.Module:
    torch.manual_seed(2)
    model = create_model(name, num_classes=3, image_size=32)
    for module in model.modules():  # vgg_small's classifier starts at std 0.01: logits of order 1 make atol meaningful
        if isinstance(module, torch.nn.Linear) and name == "vgg_small":
            torch.nn.init.normal_(module.weight, 0, 0.2)
    g = torch.Generator().manual_seed(2)
    scores = {u.name: torch.rand(u.num_units, generator=g) for u in unit_groups(model)}
    return remove_units(model, masks_from_scores(scores, 0.5, couplings=coupled_groups(model)))


def _check(name: str, exporter: str, tmp_path: Path) -> None:
    model = _pruned(name)
    path = export_onnx(model, tmp_path / f"{name}.onnx", torch.zeros(2, 3, 32, 32), exporter=exporter, fallback=False)
    x = torch.randn(5, 3, 32, 32)  # another batch size than exported with: the batch dimension is dynamic
    with torch.no_grad():
        reference = model(x)
    out = run_onnx(path, x)
    assert out.shape == reference.shape == (5, 3)
    assert reference.abs().max() > 1e-3
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["vgg_small", "resnet_small", "vit_small"])
def test_pruned_model_matches_in_onnxruntime(name: str, tmp_path: Path) -> None:
    _check(name, "legacy", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg_small", "resnet_small", "vit_small"])
def test_dynamo_exporter_matches_in_onnxruntime(name: str, tmp_path: Path) -> None:
    _check(name, "dynamo", tmp_path)


def test_falls_back_to_the_other_exporter_and_refuses_bad_requests(tmp_path: Path, monkeypatch) -> None:
    tried: list[str] = []

    def fake(model, path, x, exporter, dynamic_batch, opset):  # noqa: ANN001, ANN202
        tried.append(exporter)
        if exporter == "legacy":
            raise RuntimeError("legacy exporter removed")

    monkeypatch.setattr(export_module, "_export", fake)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    export_onnx(model, tmp_path / "m.onnx", torch.zeros(1, 3, 2, 2))
    assert tried == ["legacy", "dynamo"]
    with pytest.raises(RuntimeError, match="legacy exporter removed"):
        export_onnx(model, tmp_path / "m.onnx", torch.zeros(1, 3, 2, 2), fallback=False)
    with pytest.raises(ValueError, match=r"exporter must be one of \('legacy', 'dynamo'\), got 'tflite'"):
        export_onnx(model, tmp_path / "m.onnx", torch.zeros(1, 3, 2, 2), exporter="tflite")
    with pytest.raises(ValueError, match=r"must be \(N, C, H, W\)"):
        export_onnx(model, tmp_path / "m.onnx", torch.zeros(3, 2, 2))


def test_the_onnx_tolerance_follows_the_logits_scale() -> None:
    """float32 rounding grows with the logits: a model with logits of 2e4 may differ by 2 (1e-4 of them), one with
    logits below 1 by 1e-4; the check that the card prints cannot pass a difference above that."""
    assert onnx_tolerance(torch.tensor([[0.5, -0.2]])) == pytest.approx(ONNX_TOLERANCE)
    assert onnx_tolerance(torch.tensor([[2e4, -3.0]])) == pytest.approx(2e4 * ONNX_TOLERANCE)
    assert onnx_tolerance(torch.tensor([[-50.0, 3.0]])) == pytest.approx(50 * ONNX_TOLERANCE)
    measured = 1.4  # efficientnet_b0 with random weights: logits ~1.4e4, float32 noise of the export
    assert measured <= onnx_tolerance(torch.tensor([[1.4e4, 0.0]]))
    assert not measured <= onnx_tolerance(torch.tensor([[10.0, 0.0]]))
