"""The README's Python API snippet runs as written (on the real PneumoniaMNIST files) and does what it says."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from medprune.pruning import apply_masks

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_python_api_runs_as_written(data_root: Path, monkeypatch, capsys) -> None:
    blocks = _python_blocks()
    assert len(blocks) == 1, "the README has one Python API snippet"
    monkeypatch.setenv("MEDPRUNE_DATA", str(data_root))
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    printed = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= printed <= 1.0  # the masked model's test accuracy
    model, smaller, masks, x = (namespace[k] for k in ("model", "smaller", "masks", "x"))
    assert sum(p.numel() for p in smaller.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad(), apply_masks(model, masks):
        expected = model.eval()(x)
    torch.testing.assert_close(smaller.eval()(x), expected, rtol=1e-4, atol=1e-5)
