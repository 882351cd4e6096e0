"""The scoring contract, checked for every registered method on every small architecture.

Keys match the unit groups, one finite score per unit, deterministic under a seed, batch-size invariant, no hook left
behind (also after an exception inside the forward pass), parameters, gradients and train/eval mode untouched.
A method that does not support an architecture must say so with ``NotImplementedError``; those pairs are listed in
:data:`UNSUPPORTED` and asserted to raise, so a method that regresses to "unsupported" fails here.
"""

from __future__ import annotations

import pytest
import torch
from helpers import has_hooks

from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.scoring.registry import available_scorers, score, scorer_entry

MODELS = ["vgg_small", "resnet_small", "vit_small"]
FAST_OPTIONS = {"ig": {"steps": 3, "chunk_size": 8}}  # keep the suite quick; every other method runs its defaults
#: (method, model) pairs that must refuse with NotImplementedError; every registered method supports every small
#: architecture today, so the list is empty: adding to it is a decision, not an accident.
UNSUPPORTED: frozenset[tuple[str, str]] = frozenset()


def _score(model, x, y, method, **kwargs):
    return score(model, x, y, method, **FAST_OPTIONS.get(method, {}), **kwargs)


def test_unsupported_pairs_are_registered_methods():
    assert {method for method, _ in UNSUPPORTED} <= set(available_scorers())
    assert {name for _, name in UNSUPPORTED} <= set(MODELS)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    return bool(((a - b).abs() <= rtol * a.abs().max() + 1e-9).all())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", available_scorers())
def test_scorer_contract(method, name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, image_size=32).train()  # scoring must switch to eval and back
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 1])
    groups = unit_groups(model)
    if (method, name) in UNSUPPORTED:
        with pytest.raises(NotImplementedError):
            _score(model, x, y, method, batch_size=4, seed=7)
        assert not has_hooks(model) and model.training
        return

    first = _score(model, x, y, method, batch_size=4, seed=7)
    assert list(first) == [g.name for g in groups]
    for g in groups:
        assert first[g.name].shape == (g.num_units,), g.name
        assert first[g.name].dtype == torch.float64
        assert first[g.name].isfinite().all(), g.name
    assert any(v.abs().sum() > 0 for v in first.values()), "all scores are zero"

    again = _score(model, x, y, method, batch_size=4, seed=7)
    one_by_one = _score(model, x, y, method, batch_size=1, seed=7)
    for g in groups:
        assert _close(first[g.name], again[g.name], rtol=1e-6), f"{g.name}: not deterministic"
        assert _close(first[g.name], one_by_one[g.name]), f"{g.name}: batch 1 and batch 4 differ"

    assert not has_hooks(model)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "scoring changed the model's state"


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", available_scorers())
def test_no_hook_is_left_after_an_exception_in_the_forward_pass(method, name):
    model = create_model(name, num_classes=3, image_size=32)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    victim = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]  # the classifier

    def explode(*_args):
        raise RuntimeError("boom inside the forward pass")

    handle = victim.register_forward_hook(explode)
    try:
        if (method, name) in UNSUPPORTED:
            with pytest.raises((NotImplementedError, RuntimeError)):
                _score(model, x, y, method)
        elif scorer_entry(method).data_free:  # never runs the model: must still work and leave nothing behind
            assert set(_score(model, x, y, method)) == {g.name for g in unit_groups(model)}
        else:
            with pytest.raises(RuntimeError, match="boom"):
                _score(model, x, y, method)
    finally:
        handle.remove()
    assert not has_hooks(model)
    assert not model.training
