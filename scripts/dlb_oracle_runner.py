"""Run the dl-backtrace 0.1.24 package on one medprune model and write its per-unit relevance (test oracle).

Runs inside ``.oracle-venv`` (see ``scripts/build_dlb_oracle.sh``), never in the main venv: the package changes global
torch state (threads, MKL-DNN, determinism) and prints a lot. Usage::

    .oracle-venv/bin/python scripts/dlb_oracle_runner.py WORKDIR

Model mode: ``WORKDIR`` holds ``spec.json`` (``create_model`` arguments, or ``factory``: a model class of
``tests/helpers.py`` built with ``num_classes``), ``weights.safetensors`` (state dict) and
``input.safetensors`` (key ``x``, shape (1, C, H, W)). Written back: ``relevance.safetensors`` with, for every Conv2d /
Linear module, ``<module>`` = relevance at the module's OUTPUT summed over spatial positions / tokens (per channel), and
``<module>:input`` = relevance at its INPUT likewise; and ``result.json`` (node count, wall and CPU seconds, module per
node, or the package's error).
Relevance at a node's output = sum over its output children of ``get_relevance_from_child`` (dlb-oracle README).
With ``"lenient": true`` in the spec, a failing ``align_relevance`` (the package crashes on timm ViTs) returns zeros
instead of raising, so the layers above the failure can still be compared.

Rules mode (``"mode": "rules"``): ``input.safetensors`` holds the operands of single-rule cases named
``<rule>/<case>/<operand>``; each case's package result is written as ``<rule>/<case>/out[/i]``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / ".oracle-venv"))  # dlb_shims.py is copied there by build_dlb_oracle.sh
sys.path.insert(0, str(HERE.parent / "src"))

import dlb_shims  # noqa: E402,F401  (must precede dl_backtrace)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402


def _per_channel(array: np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(array, dtype=np.float64))
    if t.dim() == 4:  # (B, C, H, W)
        return t.sum(dim=(2, 3))[0]
    if t.dim() == 3:  # (B, N, C)
        return t.sum(dim=1)[0]
    return t.reshape(t.shape[0], -1)[0] if t.dim() == 2 else t


def _rules(work: Path) -> int:
    """Run the package's rule functions (CPU default implementations) on the given operands."""
    from dl_backtrace.pytorch_backtrace.dlbacktrace.activation import activation_master
    from dl_backtrace.pytorch_backtrace.dlbacktrace.core.relevance_propagation import align_relevance
    from dl_backtrace.pytorch_backtrace.dlbacktrace.utils import default_v2 as ud2

    act = activation_master["None"]
    data = {k: v.numpy() for k, v in load_file(str(work / "input.safetensors")).items()}
    cases = sorted({k.rsplit("/", 1)[0] for k in data})
    out: dict[str, torch.Tensor] = {}
    for case in cases:
        rule = case.split("/")[0]
        op = {k.rsplit("/", 1)[1]: v for k, v in data.items() if k.rsplit("/", 1)[0] == case}
        if rule == "linear":
            res = ud2.launch_linear("original", op["r"], op["x"], op["w"], op.get("b"), act)
        elif rule == "conv":
            pad, stride = tuple(int(v) for v in op["padding"]), tuple(int(v) for v in op["stride"])
            res = ud2.launch_conv2d("refactored", op["r"], op["x"], op["w"], op.get("b"), pad, stride, act)
        elif rule == "attention":
            res = ud2.launch_self_attention("original", op["r"], op["q"], op["k"], op["v"], None)[:3]
        elif rule == "align":
            res = align_relevance(op["r"], tuple(int(v) for v in op["shape"]))
        else:
            raise ValueError(f"unknown rule {rule!r}")
        if isinstance(res, list | tuple):
            for i, part in enumerate(res):
                out[f"{case}/out/{i}"] = torch.as_tensor(np.asarray(part, dtype=np.float64))
        else:
            out[f"{case}/out"] = torch.as_tensor(np.asarray(res, dtype=np.float64))
    save_file({k: v.contiguous() for k, v in out.items()}, str(work / "relevance.safetensors"))
    return 0


def _lenient_align() -> None:
    from dl_backtrace.pytorch_backtrace.dlbacktrace.core import relevance_propagation as rp

    strict = rp.align_relevance

    def align(r, target_shape, total_relevance=None):  # noqa: ANN001,ANN202 - package signature
        try:
            return strict(r, target_shape, total_relevance)
        except ValueError:
            return np.zeros(target_shape, dtype=np.float32)

    rp.align_relevance = align


def main(workdir: str) -> int:
    work = Path(workdir)
    spec = json.loads((work / "spec.json").read_text())
    if spec.get("mode") == "rules":
        return _rules(work)
    if spec.get("lenient"):
        _lenient_align()
    from medprune.models import create_model

    if spec.get("factory"):  # a model class of tests/helpers.py (the graph path's operations), not a registry name
        sys.path.insert(0, str(HERE.parent / "tests"))
        import helpers

        model = getattr(helpers, spec["factory"])(spec["num_classes"])
    else:
        model = create_model(spec["name"], spec["num_classes"], spec.get("in_channels", 3), spec["image_size"])
    model.load_state_dict(load_file(str(work / "weights.safetensors")))
    model.eval()
    x = load_file(str(work / "input.safetensors"))["x"]
    from dl_backtrace import DLBacktrace
    from dl_backtrace.pytorch_backtrace.dlbacktrace.core.relevance_propagation import get_relevance_from_child

    log = io.StringIO()
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        with contextlib.redirect_stdout(log):
            dlb = DLBacktrace(model, (x,), device="cpu", verbose=False, collect_node_module_map=True)
            res = dlb.run_task(task="image-classification", inputs=x, mode="default")
    except Exception as error:  # the package's own failure is a result worth recording
        (work / "result.json").write_text(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        return 2
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    rel, node_io = res["relevance"], res["node_io"]
    out: dict[str, torch.Tensor] = {}
    nodes: dict[str, str] = {}
    for node, info in node_io.items():
        mapped = dlb.fx_node_to_module.get(node) if hasattr(dlb, "fx_node_to_module") else None
        func = info.get("func_name", "")
        if not mapped or func not in ("conv2d", "linear", "addmm"):
            continue
        module = mapped[0]
        nodes[node] = module
        total = None
        for child in info.get("output_children", []):
            r = get_relevance_from_child(child, node, rel, node_io)
            if r is None:
                continue
            r = np.asarray(r, dtype=np.float64)
            total = r if total is None else total + r
        if total is not None:
            out[module] = _per_channel(total)
        if node in rel and not isinstance(rel[node], list):
            out[f"{module}:input"] = _per_channel(rel[node])
    save_file({k: v.contiguous() for k, v in out.items()}, str(work / "relevance.safetensors"))
    logits = model(x)
    (work / "result.json").write_text(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "nodes": len(node_io),
                "modules": nodes,
                "argmax": int(logits.argmax(1)[0]),
                "output_total": float(np.sum(rel["output"])) if "output" in rel else None,
            },
            indent=1,
        )
    )
    if os.environ.get("DLB_ORACLE_DUMP"):
        (work / "stdout.log").write_text(log.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
