"""medprune's native DLB against the dl-backtrace 0.1.24 package itself (opt-in: needs ``.oracle-venv``).

Build the oracle once with ``bash scripts/build_dlb_oracle.sh`` (about 4 min); then ``pytest -m oracle``. The package
runs in that separate venv as a subprocess (``scripts/dlb_oracle_runner.py``); without the venv every test here skips
with the reason. Criteria per unit group: Spearman >= 0.99 and relative L1 error <= 1e-3 (docs/dlb.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import GraphOracleNet
from safetensors.torch import load_file, save_file
from scipy.stats import spearmanr

from medprune.models import create_model
from medprune.models.units import UnitGroup, unit_groups
from medprune.scoring.dlb import dlb_relevance
from medprune.scoring.dlb.rules import align_rule, attention_rule, conv2d_rule, linear_rule

REPO = Path(__file__).resolve().parents[1]
ORACLE_PYTHON = REPO / ".oracle-venv" / "bin" / "python"
RUNNER = REPO / "scripts" / "dlb_oracle_runner.py"
SPEARMAN_MIN, REL_L1_MAX = 0.99, 1e-3

pytestmark = pytest.mark.oracle


@pytest.fixture(scope="module")
def oracle() -> Path:
    if not ORACLE_PYTHON.is_file() or not (REPO / ".oracle-venv" / ".oracle-installed").is_file():
        pytest.skip("dl-backtrace oracle venv absent: run `bash scripts/build_dlb_oracle.sh` (about 4 min)")
    return ORACLE_PYTHON


def _run(oracle: Path, work: Path, spec: dict, tensors: dict[str, torch.Tensor], weights: dict | None = None) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    (work / "spec.json").write_text(json.dumps(spec))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(work / "input.safetensors"))
    if weights is not None:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(work / "weights.safetensors"))
    done = subprocess.run([str(oracle), str(RUNNER), str(work)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"oracle failed: {done.stderr[-3000:]}"
    return load_file(str(work / "relevance.safetensors"))


def _randomise(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics and non-zero biases so every part of every rule is exercised."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
            elif isinstance(module, torch.nn.Conv2d | torch.nn.Linear) and module.bias is not None:
                module.bias.uniform_(-0.05, 0.05, generator=generator)
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, 0.1, generator=generator)


def _reference_units(ref: dict[str, torch.Tensor], group: UnitGroup) -> torch.Tensor:
    """The package's relevance of ``group``'s units (the runner writes channels at a module's output or input)."""
    units = ref[group.module if group.site == "output" else f"{group.module}:input"]
    return units.reshape(group.num_units, group.unit_width).sum(1)


def _assert_on_the_package(report: dict[str, tuple[float, float]]) -> None:
    bad = {k: v for k, v in report.items() if v[0] < SPEARMAN_MIN or v[1] > REL_L1_MAX}
    assert not bad, f"groups off the package (spearman, rel L1): {bad}"


def _compare(name: str, ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    ours, ref = ours.double().flatten(), ref.double().flatten()
    assert ours.shape == ref.shape, f"{name}: {ours.shape} vs {ref.shape}"
    rel_l1 = float((ours - ref).abs().sum() / ref.abs().sum().clamp_min(1e-30))
    rho = float(spearmanr(ours.numpy(), ref.numpy())[0]) if ours.numel() > 1 else 1.0
    return rho, rel_l1


# name, image size, groups compared: "all", or "last_block" for ViTs (see test docstring)
MODELS = [("vgg_small", 32), ("resnet_small", 32), ("resnet18", 64), ("vit_small", 16)]


@pytest.mark.parametrize(("name", "size"), MODELS, ids=[m for m, _ in MODELS])
def test_model_parity(oracle: Path, tmp_path: Path, name: str, size: int) -> None:
    """Per-unit relevance of every unit group equals the package's (argmax start, total 100, batch 1).

    ViT: the package cannot backtrace timm's attention (``unbind`` of qkv is unhandled and ``align_relevance`` raises;
    docs/dlb.md). The runner then zeroes the failing relevance (``lenient``), so only the last block, which lies above
    the failure, is comparable; its heads and MLP units must match.
    """
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, image_size=size)
    _randomise(model)
    x = torch.randn(1, 3, size, size)
    spec = {"name": name, "num_classes": 3, "image_size": size, "lenient": name.startswith("vit")}
    ref = _run(oracle, tmp_path, spec, {"x": x}, model.state_dict())
    groups = unit_groups(model)
    if name.startswith("vit"):
        last = f"blocks.{len(model.blocks) - 1}."
        groups = [g for g in groups if g.name.startswith(last)]
    ours = dlb_relevance(model, x, groups=groups, start="argmax")
    report = {group.name: _compare(group.name, ours[group.name][0], _reference_units(ref, group)) for group in groups}
    print(json.dumps({name: report}))  # figures for docs/dlb.md (pytest -s)
    _assert_on_the_package(report)


def test_graph_operations_parity(oracle: Path, tmp_path: Path) -> None:
    """The graph path's rules the family models never meet (a product of activations, ``mean`` over positions,
    ``cat``; docs/dlb.md) equal the package's on a small CNN made of them (argmax start, total 100, batch 1)."""
    torch.manual_seed(0)
    model = GraphOracleNet(num_classes=3).eval()
    _randomise(model)
    with torch.no_grad():  # the gate's hidden units active (post-ReLU input, positive weights): relevance reaches them
        model.excite.reduce.weight.abs_()
    x = torch.randn(1, 3, 12, 12)
    ref = _run(oracle, tmp_path, {"factory": "GraphOracleNet", "num_classes": 3}, {"x": x}, model.state_dict())
    groups = unit_groups(model)
    ours = dlb_relevance(model, x, groups=groups, start="argmax")
    report = {}
    for group in groups:
        ref_units = _reference_units(ref, group)
        assert float(ref_units.abs().sum()) > 0, f"{group.name}: no relevance reaches it, nothing is compared"
        report[group.name] = _compare(group.name, ours[group.name][0], ref_units)
    print(json.dumps({"graph": report}))  # figures for docs/dlb.md (pytest -s)
    assert {"excite.reduce", "excite.expand", "concat.conv"} <= set(report), sorted(report)  # each operation's branch
    _assert_on_the_package(report)


def _rule_cases() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    cases = {
        "linear/mixed/r": rnd(4, 6).abs(),
        "linear/mixed/x": rnd(4, 5),
        "linear/mixed/w": rnd(6, 5),
        "linear/mixed/b": rnd(6) * 0.3,
        "linear/tokens/r": rnd(2, 3, 6),
        "linear/tokens/x": rnd(2, 3, 5),
        "linear/tokens/w": rnd(6, 5),
        "linear/tokens/b": rnd(6) * 0.3,
        # non-negative inputs and an all-positive / all-negative weight row: the package's P, N -> 1 guard
        "linear/onesided/r": rnd(3, 4).abs(),
        "linear/onesided/x": rnd(3, 5).abs(),
        "linear/onesided/w": torch.cat([rnd(1, 5).abs(), -rnd(1, 5).abs(), rnd(2, 5)]),
        "linear/onesided/b": rnd(4) * 0.3,
        "conv/s2p1/r": rnd(2, 4, 3, 3).abs(),
        "conv/s2p1/x": rnd(2, 3, 6, 6),
        "conv/s2p1/w": rnd(4, 3, 3, 3),
        "conv/s2p1/b": rnd(4) * 0.3,
        "conv/s2p1/padding": torch.tensor([1.0, 1.0]),
        "conv/s2p1/stride": torch.tensor([2.0, 2.0]),
        "conv/s1p0/r": rnd(1, 2, 4, 4),
        "conv/s1p0/x": rnd(1, 3, 6, 6),
        "conv/s1p0/w": rnd(2, 3, 3, 3),
        "conv/s1p0/b": rnd(2) * 0.3,
        "conv/s1p0/padding": torch.tensor([0.0, 0.0]),
        "conv/s1p0/stride": torch.tensor([1.0, 1.0]),
        "attention/a/r": rnd(2, 3, 5, 4),
        "attention/a/q": rnd(2, 3, 5, 4),
        "attention/a/k": rnd(2, 3, 5, 4),
        "attention/a/v": rnd(2, 3, 5, 4),
    }
    for case, (src, dst) in {
        "pool2": ((1, 2, 2, 2), (1, 2, 4, 4)),
        "tile": ((1, 2, 3, 3), (1, 2, 7, 7)),
        "sum": ((1, 2, 7, 7), (1, 2, 1, 1)),
        "gap": ((1, 2, 1, 1), (1, 2, 4, 4)),
    }.items():
        cases[f"align/{case}/r"] = rnd(*src).abs()
        cases[f"align/{case}/shape"] = torch.tensor(dst, dtype=torch.float64)
    return cases


def test_rule_parity(oracle: Path, tmp_path: Path) -> None:
    """Each vectorised rule equals the package's function on the same operands (incl. its edge-case guards)."""
    cases = _rule_cases()
    ref = _run(oracle, tmp_path, {"mode": "rules"}, cases)
    op = {k: v.double() for k, v in cases.items()}
    checked = 0
    for key in sorted({k.rsplit("/", 1)[0] for k in cases}):
        rule = key.split("/")[0]
        c = {k.rsplit("/", 1)[1]: v for k, v in op.items() if k.rsplit("/", 1)[0] == key}
        if rule == "linear":
            outs = [linear_rule(c["r"], c["x"], c["w"], c["b"], torch.nn.functional.linear(c["x"], c["w"], c["b"]))]
        elif rule == "conv":
            stride, padding = tuple(int(v) for v in c["stride"]), tuple(int(v) for v in c["padding"])
            outs = [conv2d_rule(c["r"], c["x"], c["w"], c["b"], stride, padding)]
        elif rule == "attention":
            outs = list(attention_rule(c["r"], c["q"], c["k"], c["v"]))
        else:
            outs = [align_rule(c["r"], tuple(int(v) for v in c["shape"]))]
        for i, ours in enumerate(outs):
            theirs = ref[f"{key}/out/{i}"] if len(outs) > 1 else ref[f"{key}/out"]
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5, msg=lambda m, key=key: f"{key}: {m}")
            checked += 1
    assert checked == 12  # 3 linear + 2 conv + 3 attention (q, k, v) + 4 align


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-s", "-m", "oracle"]))
