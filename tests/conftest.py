"""Shared fixtures: the real MedMNIST data folder and small seeded models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("MEDPRUNE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``../shared/data`` (or ``$MEDPRUNE_DATA``); tests that need it skip, visibly, when it is absent."""
    if not (DATA_ROOT / "pneumoniamnist" / "pneumoniamnist.npz").is_file():
        pytest.skip(f"real MedMNIST data not found under {DATA_ROOT} (set MEDPRUNE_DATA)")
    return DATA_ROOT


@pytest.fixture(autouse=True)
def _torch_defaults():
    torch.manual_seed(0)
    yield
