"""efficiency(): params, MACs and latency of the physically pruned model, leaving the caller's model as it was."""

from __future__ import annotations

import pytest
import torch

import medprune.compression.evidence as evidence
from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.pruning.cost import PairedTiming, efficiency, interleaved_latency
from medprune.pruning.masks import masks_from_scores
from medprune.pruning.physical import coupled_groups


def _masks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    scores = {g.name: torch.arange(g.num_units, dtype=torch.float64) for g in unit_groups(model)}
    return masks_from_scores(scores, 0.5, couplings=coupled_groups(model))


def test_efficiency_counts_fewer_params_and_leaves_the_model_alone() -> None:
    model = create_model("vgg_small", num_classes=2, image_size=32).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    full = efficiency(model, None, repeats=1)
    pruned = efficiency(model, _masks(model), repeats=1)
    assert pruned["params"] < full["params"] and pruned["macs"] < full["macs"] and pruned["latency_ms"] > 0
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.gpu
def test_efficiency_does_not_move_a_cuda_model() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = create_model("vgg_small", num_classes=2, image_size=32).cuda()
    stats = efficiency(model, _masks(model), repeats=1)
    assert next(model.parameters()).is_cuda
    assert next(stats["model"].parameters()).device.type == "cpu"


def test_latency_rows_time_interleaved_and_flag_a_speedup_beyond_the_macs_reduction(monkeypatch) -> None:  # noqa: ANN001
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))

    def fake_timing(first, second, inputs, repeats):  # noqa: ANN001, ANN202
        return PairedTiming(30.0, 1.0, (29.0, 31.0), (0.9, 1.1), 29.0, 0.9, repeats)

    monkeypatch.setattr(evidence, "interleaved_latency", fake_timing)
    monkeypatch.setattr(evidence, "example_inputs_for", lambda m, batch: torch.zeros(batch, 12))
    rows = evidence.latency_rows(model, model, batches=(1,), threads=1, repeats=4, macs_ratio=1.4)
    assert rows[0].speedup == 30.0 and rows[0].repeats == 4 and rows[0].original_iqr_ms == (29.0, 31.0)
    assert "above 1.5x the MACs reduction (1.4x)" in rows[0].flag
    assert evidence.latency_rows(model, model, batches=(1,), threads=1, repeats=4, macs_ratio=25.0)[0].flag == ""


def test_interleaved_latency_times_both_models_the_same_number_of_times() -> None:
    calls: list[str] = []

    class Probe(torch.nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(self.name)
            return x

    timing = interleaved_latency(Probe("a"), Probe("b"), (torch.zeros(1), torch.zeros(1)), repeats=4, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then alternating order
    assert timing.repeats == 4 and timing.first_iqr_ms[0] <= timing.first_ms <= timing.first_iqr_ms[1]
