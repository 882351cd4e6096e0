"""int8 on top of pruning, measured (issue 22): for compressed PneumoniaMNIST and BreastMNIST models, ``medprune
quantize`` (ONNX Runtime static quantization, QDQ, per-channel int8 weights, calibrated on clean training images) is
run on each compress folder, and one table per run reports the int8 decision on validation (the compress run's own
rule against the original model), test metrics, ECE before and after quantization, and ONNX Runtime latency of the
original fp32 / compressed fp32 / compressed int8 model at batch 1 and 32 (interleaved repeats, median and IQR).

The compress folders are only read; every output goes under ``--out``. The machine's load average is recorded beside
each run (a shared CPU: latency medians move with it; the three models are timed interleaved so the load falls on all
of them alike).

    python bench/quantize.py formats --folders runs/calibration-cpu/compress/pneumoniamnist-s6-point ... \\
        --out /tmp/quantize-formats --threads 1 --repeats 500
    python bench/quantize.py run --folders runs/calibration-cpu/compress/pneumoniamnist-s6-point ... \\
        --out /tmp/quantize-bench --threads 1 --repeats 200
    python bench/quantize.py table --out /tmp/quantize-bench --formats /tmp/quantize-formats > bench/quantize_results.md

``formats`` times the int8 model's two ONNX Runtime layouts (QDQ, QOperator) beside the fp32 model and an identity
model (the per-call floor) in one run, each judged on validation by the folder's rule. ``schemes`` does the same for
departures from the card's scheme that are said to make int8 faster or safer (:data:`SCHEMES`: the first convolution
and the classifier left in float, weights per tensor, only Conv / Gemm quantized):

    python bench/quantize.py schemes --folders FOLDER ... --out SCHEMES --threads 1 --repeats 400
    python bench/quantize.py table --out OUT --formats FORMATS --schemes SCHEMES > bench/quantize_results.md

``sessions`` times each compress folder's fp32 and int8 models in several fresh ONNX Runtime sessions per thread count
and prints how far their ratio moves from one session to the next (why the card times at one thread by default):

    python bench/quantize.py sessions --folders FOLDER ... --threads 1 2 --sessions 5 --repeats 100 \
        >> bench/quantize_results.md

``profile`` reads the ``run`` step's folders (each holds the fp32 ``model.onnx`` and its int8 model, shipped or
refused) and prints where ONNX Runtime spends a batch-1 call of each, per operator type (its own profiler, 1 thread),
beside the convolutions' channel widths:

    python bench/quantize.py profile --out OUT --runs 500 >> bench/quantize_results.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from medprune.config import build_config
from medprune.deploy.quantize import INT8_FILE, REFUSED_FILE, judge_quantized, quantize_int8
from medprune.deploy.runtimes import latency_row, onnx_latency, onnx_logits
from medprune.provenance import to_jsonable
from medprune.runs.quantize import QuantizeConfig, check_inputs, prepare, run_quantize
from medprune.runtime import fixed_threads

METRIC_KEYS = ("accuracy", "balanced_accuracy")


def run(folders: list[str], out: Path, threads: int, repeats: int, samples: int, data_root: str | None) -> None:
    """One ``medprune quantize`` per compress folder, into ``out/<folder name>``; the load average beside it."""
    for folder in folders:
        # a checkpoint file (an unpruned model, quantized as it is) is named after the folder holding it
        target = out / (Path(folder).parent.name if Path(folder).is_file() else Path(folder).name)
        if (target / "quantization.json").is_file():
            print(f"skip {folder}: done", file=sys.stderr)
            continue
        load_before, started = os.getloadavg(), time.time()
        config = build_config(
            QuantizeConfig,
            overrides={
                "target": folder,
                "out": str(target),
                "latency_threads": threads,
                "latency_repeats": repeats,
                "calibration_samples": samples,
                "data_root": data_root,
            },
        )
        run_quantize(config)
        record = {"load average before": load_before, "load average after": os.getloadavg()}
        record["wall seconds"] = time.time() - started
        (target / "bench.json").write_text(json.dumps(record, indent=2) + "\n")


#: The int8 layouts compared by the ``formats`` step.
FORMATS = ("QDQ", "QOperator")
#: QOperator would replace QDQ as the default only if it were at least this many times faster in some row.
QOPERATOR_WINS = 1.1
#: The ``formats`` step's models, in the order they are timed (interleaved, rotating).
FORMAT_MODELS = ("compressed fp32", "int8 QDQ", "int8 QOperator", "per-call floor")


def _identity(path: Path, shape: tuple[int, ...]) -> Path:
    """An ONNX model that returns its input: ONNX Runtime's per-call cost with no computation."""
    spec = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["logits"])],
        "identity",
        [spec("images", TensorProto.FLOAT, ["batch", *shape[1:]])],
        [spec("logits", TensorProto.FLOAT, ["batch", *shape[1:]])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def formats(folders: list[str], out: Path, threads: int, repeats: int, samples: int, data_root: str | None) -> None:
    """One run over every folder: the compressed fp32 model, its int8 model in both layouts (:data:`FORMATS`, the
    same calibration images) and an identity model (the per-call floor) timed interleaved; each int8 model judged on
    validation by the folder's own rule, as ``medprune quantize`` judges. Writes ``out/<folder name>/formats.json``."""
    layouts = {layout: {"quant_format": layout} for layout in FORMATS}
    compare_int8(folders, out, threads, repeats, samples, data_root, layouts, "formats.json", "int8 ", floor=True)


def compare_int8(
    folders: list[str],
    out: Path,
    threads: int,
    repeats: int,
    samples: int,
    data_root: str | None,
    variants: dict[str, dict[str, Any]],
    record_name: str,
    label_prefix: str = "",
    floor: bool = False,
) -> None:
    """The ``formats`` and ``schemes`` steps: per folder, its int8 model under each of ``variants`` (label ->
    :func:`quantize_int8` keywords; ``keep_float`` is filled with the model's stem and head) from the same
    calibration images, each judged on validation by the folder's own rule, then all timed interleaved with the
    compressed fp32 model (and, with ``floor``, an identity model: ONNX Runtime's per-call floor). Writes
    ``out/<folder name>/<record_name>``; the latency rows name each variant ``label_prefix + label``."""
    for folder in folders:
        target = out / Path(folder).name
        target.mkdir(parents=True, exist_ok=True)
        overrides = {"target": folder, "out": str(target / "unused"), "calibration_samples": samples}
        config = build_config(QuantizeConfig, overrides={**overrides, "data_root": data_root})
        inputs = check_inputs(config)
        with fixed_threads(1):
            ready = prepare(inputs, config, target)
            paths: dict[str, Path] = {"compressed fp32": ready.fp32}
            judged = {}
            for label, options in variants.items():
                if "keep_float" in options:
                    options = {**options, "keep_float": _stem_and_head(ready.fp32)}
                name = label.replace(" ", "-").replace("+", "-")
                path = quantize_int8(ready.fp32, target / f"model.{name}.onnx", ready.calibration_images, **options)
                logits = onnx_logits(path, ready.val[0])
                judged[label] = judge_quantized(
                    inputs.rule, ready.val[1].numpy(), ready.predicted, ready.baseline, logits, ready.names
                )
                paths[label_prefix + label] = path
            if floor:
                paths["per-call floor"] = _identity(target / "identity.onnx", tuple(ready.val[0][:1].shape))
            load_before, started, cpu = os.getloadavg(), time.time(), time.process_time()
            rows = onnx_latency(paths, ready.val[0][:1], threads=threads, repeats=repeats)
        record = {
            "target": str(inputs.checkpoint),
            "calibration images": len(ready.calibration_images),
            "validation": judged,
            "latency": rows,
            "load average before": load_before,
            "load average after": os.getloadavg(),
            "timing wall seconds": time.time() - started,
            "timing CPU seconds": time.process_time() - cpu,
        }
        (target / record_name).write_text(json.dumps(to_jsonable(record), indent=2) + "\n")
        print(f"{folder}: {json.dumps([(r['batch'], r['model'], round(r['CPU median ms'], 4)) for r in rows])}")


def _documents(out: Path, name: str) -> dict[str, dict[str, Any]]:
    """Folder name -> the ``name`` record of every folder under ``out`` that holds one (sorted by folder)."""
    folders = sorted(p for p in out.iterdir() if (p / name).is_file())
    return {folder.name: json.loads((folder / name).read_text()) for folder in folders}


def formats_section(out: Path) -> list[str]:
    """The results of the ``formats`` step: wall and CPU medians per model, the fp32 / int8 ratio of each layout,
    the per-call floor, each layout's decision on validation and the load."""
    documents = _documents(out, "formats.json")
    if not documents:
        return []
    first = next(iter(documents.values()))["latency"][0]
    lines = [
        "## int8 layouts: QDQ against QOperator, measured in one run",
        "",
        f"Generated by `python bench/quantize.py table --formats OUT` from the `formats` step's files. One process "
        f"timed, for each run folder in turn, the compressed fp32 model, its int8 model in both layouts (the same "
        f"{next(iter(documents.values()))['calibration images']} calibration images, the same scheme otherwise) and "
        f"an identity model (ONNX Runtime's cost of a call that computes nothing), interleaved with rotating order: "
        f"ONNX Runtime CPU, {first['threads']} intra-op thread, {first['repeats']} timed passes per model and batch "
        "after warm-up; medians of the wall time and of the process's CPU time per pass. Each int8 model is judged on "
        "validation by its folder's own rule (as `medprune quantize` does). One compressed checkpoint per row: the "
        "ratios are one machine's, with no interval across runs. Where the wall time is well above the CPU time the "
        "process was waiting for a core (the machine was shared): a long pass is more often interrupted than a short "
        "one, so there the CPU-time ratio is the fairer comparison of the models.",
        "",
        "| run | batch | fp32 ms (CPU) | QDQ ms (CPU) | QOperator ms (CPU) | per-call floor ms | fp32 / QDQ (CPU) | "
        "fp32 / QOperator (CPU) | QDQ passes rule | QOperator passes rule | load (1 min) before, after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    better = []
    for name, document in documents.items():
        rows, judged = document["latency"], document["validation"]
        for batch in sorted({r["batch"] for r in rows}):
            ms = {m: latency_row(rows, batch, m) for m in FORMAT_MODELS}
            cells = [name, str(batch)]
            cells += [f"{ms[m]['median ms']:.3f} ({ms[m]['CPU median ms']:.3f})" for m in FORMAT_MODELS[:3]]
            cells.append(f"{ms['per-call floor']['median ms']:.4f}")
            ratios = [ms["compressed fp32"]["median ms"] / ms[f"int8 {f}"]["median ms"] for f in FORMATS]
            cpu = [ms["compressed fp32"]["CPU median ms"] / ms[f"int8 {f}"]["CPU median ms"] for f in FORMATS]
            cells += [f"{r:.2f}x ({c:.2f}x)" for r, c in zip(ratios, cpu)]
            cells += ["yes" if judged[f]["accepted"] else f"no ({judged[f]['why not']})" for f in FORMATS]
            load = document["load average before"][0], document["load average after"][0]
            cells.append(f"{load[0]:.1f}, {load[1]:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
            better += [ratios[1] / ratios[0], cpu[1] / cpu[0]]
    floor = [
        latency_row(d["latency"], 1, "per-call floor")["median ms"]
        / latency_row(d["latency"], 1, "compressed fp32")["median ms"]
        for d in documents.values()
    ]
    same_decisions = all(
        d["validation"]["QDQ"]["accepted"] == d["validation"]["QOperator"]["accepted"] for d in documents.values()
    )
    verdict = (
        "QOperator is not faster than QDQ beyond the noise of these runs, so QDQ stays the default "
        "(`quantize_int8(..., quant_format='QOperator')` remains for such measurements)"
        if max(better) < QOPERATOR_WINS
        else f"QOperator is faster than QDQ by at least {QOPERATOR_WINS:.2f}x in some row: see the table"
    )
    lines += [
        "",
        f"QOperator's speed-up over QDQ's, per run and batch, wall or CPU time: {min(better):.2f}x to "
        f"{max(better):.2f}x (1.00x = the same; {len(better) // 2} rows); the two layouts' decisions on validation are "
        f"{'the same' if same_decisions else 'different'} in every run. {verdict}. ONNX Runtime's per-call floor at "
        f"batch 1 is {100 * min(floor):.0f}-{100 * max(floor):.0f}% of the compressed fp32 model's time.",
        "",
    ]
    return lines


#: The ``schemes`` step's int8 variants: label -> :func:`quantize_int8` keywords (``stem+head`` is filled per model).
SCHEMES: dict[str, dict[str, Any]] = {
    "card scheme": {},
    "stem+head float": {"keep_float": ("stem", "head")},
    "per-tensor weights": {"per_channel": False},
    "Conv+Gemm only": {"op_types": ("Conv", "Gemm")},
}


def _stem_and_head(path: Path) -> tuple[str, ...]:
    """The ONNX node names of the first convolution and the last Gemm / MatMul (the classifier)."""
    nodes = onnx.load(str(path)).graph.node
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    heads = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
    return tuple(convs[:1] + heads[-1:])


def schemes(folders: list[str], out: Path, threads: int, repeats: int, samples: int, data_root: str | None) -> None:
    """One run over every folder: the compressed fp32 model and its int8 model under each of :data:`SCHEMES` (the same
    calibration images), timed interleaved, each judged on validation by the folder's own rule. Writes
    ``out/<folder name>/schemes.json``."""
    compare_int8(folders, out, threads, repeats, samples, data_root, SCHEMES, "schemes.json")


def schemes_section(out: Path) -> list[str]:
    """The ``schemes`` step's results: per run, batch-1 fp32 / int8 CPU-time ratio of each scheme and its decision."""
    documents = _documents(out, "schemes.json")
    if not documents:
        return []
    first = next(iter(documents.values()))["latency"][0]
    lines = [
        "## int8 schemes: what is said to make int8 faster, measured in one run",
        "",
        "Generated by `python bench/quantize.py table --schemes OUT` from the `schemes` step's files. One process "
        "quantized each compressed fp32 model under every scheme below (the same calibration images) and timed all "
        f"of them with the fp32 model interleaved: ONNX Runtime CPU, {first['threads']} intra-op thread, "
        f"{first['repeats']} timed passes per model and batch; cells are batch-1 fp32 / int8 ratios of the median "
        "process CPU time (above 1: int8 faster), with `refused` where the folder's own rule refuses that int8 model "
        "on validation. Schemes: " + "; ".join(f"`{k}`" for k in SCHEMES) + " (the card's scheme is the first; "
        "`stem+head float` leaves the first convolution and the classifier in float).",
        "",
        "| run | " + " | ".join(SCHEMES) + " | fp32 batch-1 CPU ms |",
        "|---" * (len(SCHEMES) + 2) + "|",
    ]
    met = dict.fromkeys(SCHEMES, 0)
    for name, document in documents.items():
        rows, judged = document["latency"], document["validation"]
        fp32 = latency_row(rows, 1, "compressed fp32")["CPU median ms"]
        cells = [name]
        for label in SCHEMES:
            ratio = fp32 / latency_row(rows, 1, label)["CPU median ms"]
            accepted = judged[label]["accepted"]
            met[label] += accepted and ratio >= TARGET_SPEEDUP
            cells.append(f"{ratio:.2f}x" + ("" if accepted else " (refused)"))
        cells.append(f"{fp32:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Shipped (passing the rule) and at least {TARGET_SPEEDUP}x faster at batch 1, of {len(documents)} runs: "
        + ", ".join(f"{label} {count}" for label, count in met.items())
        + ".",
        "",
    ]
    return lines


def _kernel_microseconds(path: Path, runs: int) -> dict[str, float]:
    """ONNX Runtime's profiler on ``runs`` batch-1 calls of ``path`` (1 thread, after 50 warm-up calls): mean
    microseconds per call of every operator type's kernels, and ``call`` (the whole run, kernels and the rest)."""
    import onnxruntime as ort  # optional extra

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as scratch:
        options.profile_file_prefix = str(Path(scratch) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        shape = [1] + [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape[1:]]
        feed = {"images": np.random.default_rng(0).random(shape, dtype=np.float32)}
        for _ in range(50 + runs):
            session.run(["logits"], feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    calls = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][-runs:]
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    kernels = kernels[-runs * (len(kernels) // (50 + runs)) :] if kernels else []
    per_type: dict[str, float] = {}
    for event in kernels:
        op = event["args"].get("op_name", "?")
        per_type[op] = per_type.get(op, 0.0) + event["dur"] / runs
    per_type["call"] = sum(e["dur"] for e in calls) / max(len(calls), 1)
    return per_type


def _widths(path: Path) -> list[int]:
    """Output channels of every convolution of an ONNX model, in graph order."""
    model = onnx.load(str(path))
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    return [shapes[n.input[1]][0] for n in model.graph.node if n.op_type == "Conv" and n.input[1] in shapes]


def profile_section(out: Path, runs: int) -> list[str]:
    """The ``profile`` step (module docstring): per run folder, the fp32 and int8 models' batch-1 kernel time per
    operator type, the whole call, and the convolutions' widths."""
    lines = [
        "## Where a batch-1 call goes: ONNX Runtime's profiler, fp32 against int8",
        "",
        f"Generated by `python bench/quantize.py profile --out OUT --runs {runs}` from the `run` step's folders: each "
        f"model timed by ONNX Runtime's own profiler over {runs} batch-1 calls after 50 warm-up calls (1 intra-op "
        "thread, every graph optimisation; profiling adds its own cost, so read the shares, not the totals). Cells: "
        "mean microseconds per call; `call` is the whole run, kernels and the rest; `other` sums the remaining "
        "operator types. ORT runs fp32 convolutions in its blocked layout (`Conv`, `FusedConv` with the activation "
        "fused, plus `ReorderInput` / `ReorderOutput`) and int8 ones as `QLinearConv` with the quantize / "
        "dequantize and layout steps around them.",
        "",
        "| run | conv widths | fp32 call | fp32 convolutions | fp32 other | int8 call | int8 QLinearConv | "
        "int8 other |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for folder in sorted(p for p in out.iterdir() if (p / "quantization.json").is_file()):
        fp32 = folder / "model.onnx"
        int8 = next((folder / name for name in (INT8_FILE, REFUSED_FILE) if (folder / name).is_file()), None)
        if int8 is None or not fp32.is_file():
            continue
        a, b = _kernel_microseconds(fp32, runs), _kernel_microseconds(int8, runs)
        conv_a = sum(v for k, v in a.items() if k in ("Conv", "FusedConv"))
        other_a = sum(v for k, v in a.items() if k not in ("Conv", "FusedConv", "call"))
        conv_b = b.get("QLinearConv", 0.0)
        other_b = sum(v for k, v in b.items() if k not in ("QLinearConv", "call"))
        widths = ", ".join(str(w) for w in _widths(fp32))
        lines.append(
            f"| {folder.name} | {widths} | {a['call']:.0f} | {conv_a:.0f} | {other_a:.0f} | {b['call']:.0f} | "
            f"{conv_b:.0f} | {other_b:.0f} |"
        )
        print(f"{folder.name}: fp32 {json.dumps(a)}; int8 {json.dumps(b)}", file=sys.stderr)
    lines.append("")
    return lines


#: The issue's acceptance: int8 batch-1 latency at least this many times lower than the fp32 compressed model's.
TARGET_SPEEDUP = 1.5


def _ratio(rows: list[dict[str, Any]], batch: int, key: str) -> float | None:
    """Compressed fp32 over int8 in ``key`` (``None`` where rows written before CPU time was recorded lack it)."""
    fp32, int8 = (
        latency_row(rows, batch, "compressed fp32").get(key),
        latency_row(rows, batch, "compressed int8").get(key),
    )
    return None if fp32 is None or int8 is None else fp32 / int8


def _summary(folders: list[Path]) -> list[str]:
    """One line per run (decision, batch-1 ratio, ECE fp32 -> int8), and how many runs met the target speed-up."""
    lines = [
        "| run | int8 shipped | batch-1 fp32 / int8 (CPU) | batch-32 fp32 / int8 (CPU) | test ECE fp32 -> int8 | "
        "load (1 min) |",
        "|---|---|---|---|---|---|",
    ]
    met, compressed = 0, 0
    for folder in folders:
        document = json.loads((folder / "quantization.json").read_text())
        bench = json.loads((folder / "bench.json").read_text())
        q, ece = document["quantization"], document["calibration"]["ece"]
        ratios = [_ratio(q["latency"], b, "median ms") for b in (1, 32)]
        cpu = [_ratio(q["latency"], b, "CPU median ms") for b in (1, 32)]
        reference = _unpruned(document)
        if not reference:
            compressed += 1
            met += ratios[0] >= TARGET_SPEEDUP and q["shipped"]
        shown = [f"{r:.2f}x" + ("" if c is None else f" ({c:.2f}x)") for r, c in zip(ratios, cpu)]
        name = f"{folder.name} (unpruned, quantized as it is)" if reference else folder.name
        lines.append(
            f"| {name} | {'yes' if q['shipped'] else 'no'} | {shown[0]} | {shown[1]} | "
            f"{ece['compressed fp32']:.3f} -> {ece['compressed int8']:.3f} | {bench['load average before'][0]:.1f} |"
        )
    lines += [
        "",
        f"Compressed runs where a shipped int8 model was at least {TARGET_SPEEDUP}x faster than the fp32 compressed "
        f"model at batch 1: {met} of {compressed}. A row marked unpruned is a reference: an unpruned checkpoint "
        "quantized as it is (its `compressed fp32` is the unpruned model).",
        "",
    ]
    return lines


def _unpruned(document: dict[str, Any]) -> bool:
    """Whether the run quantized an unpruned checkpoint as it is (its own original)."""
    return document["target"]["sha256"] == (document.get("base_model") or {}).get("sha256")


def table(out: Path, formats_out: Path | None = None, schemes_out: Path | None = None) -> str:
    """The results page: one table per run, generated from each run's ``quantization.json`` and ``bench.json``, then
    the ``formats`` and ``schemes`` steps' sections when their folders are given."""
    lines = ["# int8 on top of pruning: `medprune quantize` on compressed models (issue 22)", ""]
    lines += [
        "Generated by `python bench/quantize.py table` from the run folders (every number below is read from "
        "`quantization.json` / `bench.json`; none typed). Reproduce:",
        "",
        "    python bench/quantize.py formats --folders FOLDER ... --out FORMATS --threads 1 --repeats 500",
        "    python bench/quantize.py run --folders FOLDER ... --out OUT --threads 1 --repeats 200",
        "    python bench/quantize.py schemes --folders FOLDER ... --out SCHEMES --threads 1 --repeats 400",
        "    python bench/quantize.py table --out OUT --formats FORMATS --schemes SCHEMES > bench/quantize_results.md",
        "",
        "Inputs: compress folders, read only: four of `runs/calibration-cpu` (the issue-20 calibration runs: "
        "point rule, tolerance 1 point, PneumoniaMNIST resnet_small and BreastMNIST vgg_small checkpoints, "
        "rates as their cards say) and, named `-round8`, three compress runs of the same checkpoints and "
        "settings with `--set channel_multiple=8` (the fourth, breastmnist-s4, found no rate within the rule "
        "with rounding and shipped nothing), and as a reference one unpruned checkpoint quantized as it is "
        "(`runs/calibration-cpu/train/pneumoniamnist-s6`). Each run's original is the unpruned checkpoint its"
        " card names, and the int8 model is judged by that card's own rule. Machine: the 2-core x86_64 box "
        "(AVX-512 VNNI); the load average is given per run. Latency: ONNX Runtime CPU, the three models timed"
        " interleaved in one loop (rotating order), median and interquartile range.",
        "",
        "Reading: the MedMNIST models are tiny (28 x 28 inputs, well under a millisecond per image). ONNX Runtime's "
        "cost of a call that computes nothing is a small part of that (measured in the last section), so it does "
        "not explain the batch-1 ratios. int8 gains where the convolutions have many multiply-accumulates per call: "
        "the unpruned checkpoint's row against its pruned versions shows the gain shrinking as the layers narrow, and "
        "batch 32 gains more than batch 1. Rounding kept channel counts to multiples of 8 (the `-round8` rows, "
        "compress's default since) makes fp32 and int8 faster alike, so it does not raise the ratio; the schemes "
        "section below tries the usual remedies. Under load the batch-32 wall times stretch with waiting (compare the "
        "CPU times beside them). "
        "A busy machine widens every interval.",
        "",
    ]
    folders = sorted(p for p in out.iterdir() if (p / "quantization.json").is_file())
    lines += _summary(folders)
    for folder in folders:
        document = json.loads((folder / "quantization.json").read_text())
        bench = json.loads((folder / "bench.json").read_text())
        q, calibration = document["quantization"], document["calibration"]
        config = {k: v for k, v in document["config"].items() if k not in ("out", "data_root", "overwrite")}
        judged = q["validation"]
        test = q["equivalence"]["test"]
        val = q["equivalence"]["validation"]
        rows = q["latency"]
        fp32_1, int8_1 = latency_row(rows, 1, "compressed fp32"), latency_row(rows, 1, "compressed int8")
        ratio = fp32_1["median ms"] / int8_1["median ms"]
        verdict = "shipped" if q["shipped"] else f"NOT shipped ({q['why not']})"
        lines += [f"## {folder.name}", ""]
        lines += [
            f"- target: `{document['target']['checkpoint']}`; original: `{document['base_model']['name']}`",
            f"- int8 {verdict}: {judged['rule']} rule, {judged['metric']} tolerance {judged['tolerance']:.3f}, "
            f"validation {judged['value']:.3f} against the original's {judged['baseline']:.3f} (drop "
            f"{judged['drop']:+.3f}, lower bound of the change "
            + ("n/a" if judged["lower bound"] is None else f"{judged['lower bound']:+.3f}")
            + ")",
            f"- calibration: {q['calibration']['images']} {q['calibration']['source']}",
            f"- **batch-1 latency, compressed fp32 / int8: {ratio:.2f}x** "
            f"({fp32_1['median ms']:.3f} / {int8_1['median ms']:.3f} ms; ONNX Runtime, "
            f"{fp32_1['threads']} thread(s), {fp32_1['repeats']} interleaved repeats)",
            f"- load average (1, 5, 15 min) before: {', '.join(f'{x:.1f}' for x in bench['load average before'])}; "
            f"after: {', '.join(f'{x:.1f}' for x in bench['load average after'])}; "
            f"{bench['wall seconds']:.0f} s wall",
            "",
            "| model | val accuracy | val balanced acc. | test accuracy | test balanced acc. | test ECE "
            f"({calibration['bins']} bins) | agreement with fp32 (test) | batch 1 ms (IQR) CPU | "
            "batch 32 ms (IQR) CPU |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        named = {
            "original fp32": ("original fp32", None),
            "compressed fp32": ("compressed fp32", "PyTorch fp32"),
            "compressed int8": ("compressed int8", "ONNX Runtime int8"),
        }
        for label, (latency_label, runtime) in named.items():
            cells = [label]
            if runtime is None:
                cells += ["—"] * 4
            else:
                cells += [f"{val[runtime][k]:.3f}" for k in METRIC_KEYS]
                cells += [f"{test[runtime][k]:.3f}" for k in METRIC_KEYS]
            cells.append(f"{calibration['ece'][label]:.3f}")
            cells.append("—" if runtime is None else f"{100 * test[runtime]['agreement']:.1f}%")
            for batch in (1, 32):
                row = latency_row(rows, batch, latency_label)
                cpu_ms = "" if row.get("CPU median ms") is None else f" {row['CPU median ms']:.3f}"
                cells.append(f"{row['median ms']:.3f} ({row['IQR ms'][0]:.3f}-{row['IQR ms'][1]:.3f}){cpu_ms}")
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            f"The original model's validation and test metrics are the rule's baseline above; its own rows are "
            f"in the compress card. Largest |logit difference| int8 vs PyTorch fp32 on test: "
            f"{test['ONNX Runtime int8']['max |logit difference|']:.3g}; ONNX Runtime fp32 vs PyTorch: "
            f"{test['ONNX Runtime fp32']['max |logit difference|']:.1e}. Settings: {json.dumps(config)}",
            "",
        ]
    if formats_out is not None:
        lines += formats_section(formats_out)
    if schemes_out is not None:
        lines += schemes_section(schemes_out)
    return "\n".join(lines)


def sessions_section(folders: list[str], thread_counts: list[int], sessions: int, repeats: int) -> list[str]:
    """How much the card's fp32 / int8 latency ratio moves from one ONNX Runtime session to the next, per thread
    count: each folder's ``model.onnx`` and int8 model timed ``sessions`` times with :func:`onnx_latency` (fresh
    sessions each time, ``repeats`` interleaved passes), on a random image of the model's input shape."""
    lines = [
        f"fp32 / int8 latency ratio in {sessions} fresh ONNX Runtime sessions per row ({repeats} interleaved "
        "passes each; load average at the start " + " ".join(f"{v:.1f}" for v in os.getloadavg()) + "):",
        "",
        "| folder | threads | batch | fp32 ms (min-max) | int8 ms (min-max) | ratio per session |",
        "| --- | ---: | ---: | --- | --- | --- |",
    ]
    for folder in map(Path, folders):
        paths = {"fp32": folder / "model.onnx", "int8": folder / INT8_FILE}
        shape = onnx.load(str(paths["fp32"])).graph.input[0].type.tensor_type.shape.dim
        example = torch.randn(1, *(d.dim_value for d in list(shape)[1:]), generator=torch.Generator().manual_seed(0))
        for threads in thread_counts:
            timed: dict[int, list[tuple[float, float]]] = {1: [], 32: []}
            for _ in range(sessions):
                rows = onnx_latency(paths, example, threads=threads, repeats=repeats)
                for batch in timed:
                    fp32, int8 = (latency_row(rows, batch, m)["median ms"] for m in ("fp32", "int8"))
                    timed[batch].append((fp32, int8))
            for batch, pairs in timed.items():
                fp32s, int8s = [p[0] for p in pairs], [p[1] for p in pairs]
                lines.append(
                    f"| {folder.name} | {threads} | {batch} | {min(fp32s):.3f}-{max(fp32s):.3f} | "
                    f"{min(int8s):.3f}-{max(int8s):.3f} | {' '.join(f'{a / b:.2f}' for a, b in pairs)} |"
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    steps = {
        "run": ("one medprune quantize per compress folder", 30),
        "formats": ("QDQ against QOperator on the same folders, timed in one run", 500),
        "schemes": ("int8 scheme variants (SCHEMES) on the same folders, timed in one run", 400),
    }
    for step, (description, repeats) in steps.items():
        timed = sub.add_parser(step, help=description)
        timed.add_argument("--folders", nargs="+", required=True, help="compress output folders (read only)")
        timed.add_argument("--out", type=Path, required=True)
        timed.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads of the latency")
        timed.add_argument("--repeats", type=int, default=repeats, help="interleaved timed passes per model and batch")
        timed.add_argument("--samples", type=int, default=256, help="calibration images (stratified, clean, training)")
        timed.add_argument("--data-root", default=os.environ.get("MEDPRUNE_DATA"))
    where = sub.add_parser("profile", help="ONNX Runtime's profiler on the run step's fp32 and int8 models")
    where.add_argument("--out", type=Path, required=True, help="the run step's --out")
    where.add_argument("--runs", type=int, default=500)
    spread = sub.add_parser("sessions", help="fp32 / int8 ratio across fresh ONNX Runtime sessions per thread count")
    spread.add_argument("--folders", nargs="+", required=True, help="compress output folders with an int8 model")
    spread.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    spread.add_argument("--sessions", type=int, default=5)
    spread.add_argument("--repeats", type=int, default=100)
    show = sub.add_parser("table")
    show.add_argument("--out", type=Path, required=True)
    show.add_argument("--formats", type=Path, default=None, help="the formats step's --out")
    show.add_argument("--schemes", type=Path, default=None, help="the schemes step's --out")
    args = parser.parse_args()
    if args.step == "run":
        run(args.folders, args.out, args.threads, args.repeats, args.samples, args.data_root)
    elif args.step == "formats":
        formats(args.folders, args.out, args.threads, args.repeats, args.samples, args.data_root)
    elif args.step == "profile":
        print("\n".join(profile_section(args.out, args.runs)))
    elif args.step == "sessions":
        print("\n".join(sessions_section(args.folders, args.threads, args.sessions, args.repeats)))
    elif args.step == "schemes":
        schemes(args.folders, args.out, args.threads, args.repeats, args.samples, args.data_root)
    else:
        print(table(args.out, args.formats, args.schemes))


if __name__ == "__main__":
    main()
