"""Helpers shared by the tests (not part of the library)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from medprune.models import create_model
from medprune.models.units import unit_groups


def has_hooks(model: nn.Module) -> bool:
    """Whether any module of ``model`` still carries a forward/backward hook (nothing may be left behind)."""
    for module in model.modules():
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks:
            return True
        if getattr(module, "_backward_pre_hooks", None):
            return True
    return False


def tiny_sweep_model(images: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """An untrained resnet_small at 16 px and ``images`` random images with random binary labels (fixed seeds)."""
    torch.manual_seed(0)
    model = create_model("resnet_small", num_classes=2, image_size=16).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(images, 3, 16, 16, generator=g), torch.randint(0, 2, (images,), generator=g)
    return model, x, y


def random_scores(model: nn.Module, seed: Callable[[str], int] = len) -> Callable[[str, str], dict[str, torch.Tensor]]:
    """A ``scores_for(method, sampling)`` stand-in: uniform random scores per unit, seeded by ``seed(method)``."""

    def scores_for(method: str, sampling: str) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed(method))
        return {grp.name: torch.rand(grp.num_units, generator=gen) for grp in unit_groups(model)}

    return scores_for


class SqueezeExcite(nn.Module):
    """A squeeze-excitation block: global mean -> 1x1 conv (``hidden``) -> ReLU -> 1x1 conv -> ``gate``, times the
    input (the graph-path tests' gate)."""

    def __init__(self, channels: int, gate: nn.Module, hidden: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=False)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=False)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return x * scale


class OneOp(nn.Module):
    """stem conv -> [operation under test] -> global average pool -> linear; no biases anywhere."""

    def __init__(self, middle: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.middle = middle
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.middle(self.stem(x))).flatten(1))


class ResidualBlock(nn.Module):
    """x + conv(relu(x)) on 8 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(torch.relu(x))


class ConcatBlock(nn.Module):
    """A DenseNet-style concatenation of 8 channels with 4 new ones, merged back to 8."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 4, 1, bias=False)
        self.merge = nn.Conv2d(12, 8, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(torch.cat([x, self.conv(x)], dim=1))


class GraphOracleNet(nn.Module):
    """The operations the DLB graph path takes from the package's source (product, ``mean``, ``cat``) in one small
    CNN for the oracle: stem conv -> BN -> ReLU -> squeeze-excitation (mean, sigmoid gate, product) -> concatenation
    block -> swish as ``x * sigmoid(x)`` -> mean over positions -> linear. Built the same way by
    ``scripts/dlb_oracle_runner.py``."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.excite = SqueezeExcite(8, nn.Sigmoid(), hidden=4)
        self.concat = ConcatBlock()
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.excite(torch.relu(self.norm(self.stem(x))))
        x = self.concat(x)
        x = x * torch.sigmoid(x)  # swish written out: a product of an activation with its own gate
        # keepdim, then flatten: the package's `mean` rule cannot broadcast a mean that dropped its dimensions
        return self.head(x.mean((2, 3), keepdim=True).flatten(1))


class Swish(nn.Module):
    """Swish written as ``x * sigmoid(x)`` (a product of an activation with its own gate)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def sweep_row(checkpoint: str, method: str, sampling: str, rate: float, split: str, seed: int = 0, **columns) -> dict:
    """A results row: the curve identity every sweep row carries, at the defaults of a global signed curve of model
    ``m`` on dataset ``d``, followed by ``columns`` (metrics; an identity column given here replaces its default in
    place)."""
    row = {
        "model": "m",
        "dataset": "d",
        "checkpoint": checkpoint,
        "method": method,
        "sampling": sampling,
        "sign": "signed",
        "target": "true",
        "n_per_class": 10,
        "seed": seed,
        "scope": "global",
        "normalize": "none",
        "recalibrate": "none",
        "recalibrate_samples": 0,
        "couplings": False,
        "rate": rate,
        "split": split,
    }
    row.update(columns)
    return row


#: The repository root (scripts/ and bench/ are not packages: tests load their files with :func:`load_script`).
REPO = Path(__file__).resolve().parents[1]


def load_script(path: str) -> ModuleType:
    """A script of the repository (``"scripts/verify_results.py"``) imported as a module named after its file, and
    registered in ``sys.modules`` so its dataclasses resolve their own module."""
    name = Path(path).stem
    spec = importlib.util.spec_from_file_location(name, REPO / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
