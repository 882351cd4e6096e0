"""efficiency(): params, MACs and latency of the physically pruned model, leaving the caller's model as it was."""

from __future__ import annotations

import pytest
import torch

from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.pruning.cost import efficiency
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
