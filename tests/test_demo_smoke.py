"""The demo end to end on real PneumoniaMNIST with the shrunk (``quick``) config; a re-run reuses every stage."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from medprune.checkpoint import load_checkpoint
from medprune.compression.search import NoCandidateError
from medprune.data import load_dataset, stack_samples
from medprune.metrics import evaluate
from medprune.runs.demo import DemoConfig, run_demo


def test_demo_quick_end_to_end(tmp_path, data_root, monkeypatch):
    threads = torch.get_num_threads()
    try:
        result = run_demo(DemoConfig(data_root=str(data_root), out=str(tmp_path / "demo"), quick=True, threads=1))
        out = tmp_path / "demo"
        strict = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
        assert strict["rows"] == result.rows and strict["deployed"] == asdict(result.deployed)
        with open(out / "sweep" / "results.csv") as handle:
            rows = list(csv.DictReader(handle))
        # (baseline + (lrp, random, magnitude) x rates {0, 0.3}) x (val, test); quick: 1 seed, paper protocol
        assert len(rows) == result.rows == 2 * (1 + 3 * 2)
        assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
        page = Path(result.report).read_text()
        assert "Table 1 (test split)" in page and page.count("data:image/png;base64,") >= 3

        deployed = result.deployed
        model, meta = load_checkpoint(deployed.checkpoint)
        test = load_dataset("pneumoniamnist", data_root, image_size=28).test
        accuracy = evaluate(model, stack_samples(test, range(len(test))))["accuracy"]
        assert accuracy == deployed.masked_accuracy == deployed.physical_accuracy
        assert meta["pruning"]["rate"] == deployed.choice["rate"] and deployed.choice["chosen_on"] == "val"
        assert deployed.params[1] <= deployed.params[0]

        # the deliverable: compress's smaller model, as its card and the summary say
        shipped = result.compressed
        assert strict["compressed"] == shipped and shipped["chosen_on"] == "val" and shipped["rate"] == 0.3
        small, small_meta = load_checkpoint(shipped["model"])
        card = json.loads((out / "compress" / "card.json").read_text())
        assert shipped["units_removed"] == card["totals"]["units removed (fraction)"] >= 0.3
        assert shipped["params"][1] == sum(p.numel() for p in small.parameters()) < shipped["params"][0]
        balanced = evaluate(small, stack_samples(test, range(len(test))))["balanced_accuracy"]
        assert balanced == pytest.approx(shipped["test_balanced_accuracy"][1], abs=1e-12)
        assert Path(shipped["onnx"]).is_file() and Path(shipped["card"]).read_text().startswith("#")
        # the demo asks for int8 too: the summary repeats the card's decision and its ONNX Runtime batch-1 latency
        quantization = card["quantization"]
        assert shipped["int8"]["shipped"] == quantization["shipped"] and quantization["calibration"]["images"] == 32
        assert (shipped["int8"]["onnx"] is not None) == quantization["shipped"]
        batch1 = {r["model"]: r["median ms"] for r in quantization["latency"] if r["batch"] == 1}
        assert shipped["int8"]["ort_batch1_ms"] == [batch1["compressed fp32"], batch1["compressed int8"]]

        # same command again: training, scores and sweep rows are reused, not recomputed
        stamps = {
            p: p.stat().st_mtime_ns
            for p in [
                out / "train" / "model.safetensors",
                *(out / "sweep" / "scores").iterdir(),
                out / "sweep" / "rows.jsonl",
                out / "compress" / "search.jsonl",
            ]
        }
        again = run_demo(DemoConfig(data_root=str(data_root), out=str(out), quick=True, threads=1))
        assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
        assert asdict(again.deployed) == json.loads((out / "pruned" / "done.json").read_text())

        # compress finding no rate within tolerance is reported, not a crash of the whole demo
        def refuse(config):
            raise NoCandidateError("no candidate rate of [0.3] keeps validation balanced_accuracy within 0.5")

        monkeypatch.setattr("medprune.runs.demo.run_compress", refuse)
        refused = run_demo(DemoConfig(data_root=str(data_root), out=str(out), quick=True, threads=1))
        assert refused.compressed == {
            "refused": "no candidate rate of [0.3] keeps validation balanced_accuracy within 0.5"
        }
        assert json.loads((out / "summary.json").read_text())["compressed"] == refused.compressed
    finally:
        torch.set_num_threads(threads)
