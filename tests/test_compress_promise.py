"""Compress keeps its promise: the certified rule, the class guard, a monotone search, the test evidence on the card,
and the same answer whatever the machine's thread count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from medprune.checkpoint import load_checkpoint
from medprune.checkpoint.with_data import splits_for_checkpoint
from medprune.compression.card import SearchRow
from medprune.compression.decision import AcceptanceRule
from medprune.compression.search import NoCandidateError, choose, non_monotone
from medprune.data import stack_samples
from medprune.metrics import predict
from medprune.runs.compress import compress

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "bench" / "golden" / "model.safetensors"  # resnet_small, 1 epoch on 256 PneumoniaMNIST images
LABELS = np.array([0] * 50 + [1] * 50)


def _swap(labels: np.ndarray, wrong: list[int]) -> np.ndarray:
    predictions = labels.copy()
    predictions[wrong] = 1 - labels[wrong]
    return predictions


def test_certified_rule_refuses_what_the_point_rule_accepts() -> None:
    original = _swap(LABELS, [3, 4, 62, 63, 64])
    candidate = _swap(LABELS, [0, 1, 2, 60, 61])  # five images change each way: no observed drop at all
    point = AcceptanceRule("balanced_accuracy", 0.01, rule="point").judge(LABELS, original, candidate, "ab", 0.0)
    certified = AcceptanceRule("balanced_accuracy", 0.01).judge(LABELS, original, candidate, "ab", 0.0)
    assert point.accepted and not certified.accepted
    assert certified.lower_bound is not None and certified.lower_bound < -0.01 and certified.class_guard == []
    wider = AcceptanceRule("balanced_accuracy", -certified.lower_bound + 1e-6)
    assert wider.judge(LABELS, original, candidate, "ab", 0.0).accepted


def test_class_guard_refuses_a_model_that_stops_predicting_a_class_under_both_rules() -> None:
    labels = np.array([0] * 45 + [1] * 45 + [2] * 4)
    original = labels.copy()
    original[90:93] = 0  # class c found once of four
    candidate = labels.copy()
    candidate[90:94] = 0  # never found: balanced accuracy falls by 0.083, accuracy by 0.011
    for rule in ("point", "certified"):
        judgement = AcceptanceRule("accuracy", 0.5, rule=rule).judge(labels, original, candidate, "abc", 0.011)
        assert not judgement.accepted
        assert judgement.class_guard == ["c: recall 0.25 -> 0.00 (never predicted correctly any more)"]


def _row(rate: float, accepted: bool, bound: float | None = None, guard: list[str] | None = None) -> SearchRow:
    return SearchRow(rate, rate, 0.9, 0.0, accepted, {}, lower_bound=bound, class_guard=guard or [], accepted=accepted)


def test_search_is_monotone_a_rate_above_a_refused_one_is_never_chosen() -> None:
    rule = AcceptanceRule("balanced_accuracy", 0.01)
    rows = [_row(0.3, True, -0.004), _row(0.5, False, -0.02), _row(0.7, True, -0.008)]
    assert choose(rows, rule, 0.9).rate == 0.3
    assert non_monotone(rows) == [0.7]
    assert non_monotone(rows[:2]) == []


def test_refusal_names_the_smallest_tolerance_the_split_certifies() -> None:
    rule = AcceptanceRule("balanced_accuracy", 0.01)
    rows = [_row(0.3, False, -0.0231), _row(0.5, False, -0.01, guard=["b: recall 0.50 -> 0.00"])]
    with pytest.raises(NoCandidateError, match=r"certifies is 0\.024 \(rate 0\.3\).*--accept-uncertified"):
        choose(rows, rule, 0.9)


def test_a_point_rule_refusal_names_the_class_guard_when_it_refused() -> None:
    rule = AcceptanceRule("balanced_accuracy", 0.99, rule="point")
    rows = [_row(0.3, False, guard=["b: recall 0.50 -> 0.00 (never predicted correctly any more)"])]
    with pytest.raises(NoCandidateError, match=r"passes the class guard \(rate 0\.3: b: recall 0\.50 -> 0\.00 \(never"):
        choose(rows, rule, 0.42)


def _compress_with_threads(out: Path, data_root: Path, ambient: int) -> dict:
    before = torch.get_num_threads()
    torch.set_num_threads(ambient)  # the machine's default; compress pins its own (threads=1)
    try:
        compress(
            str(GOLDEN),
            str(out),
            data_root=str(data_root),
            sampling="random",
            n_per_class=3,
            rates=[0.3, 0.5],
            finetune_steps=8,
            max_train_samples=128,
            recalibration_samples=64,
            latency_repeats=1,
            latency_threads=1,
            tolerance=0.05,
        )
    finally:
        torch.set_num_threads(before)
    card = json.loads((out / "card.json").read_text())
    for unstable in ("timings", "latency", "commands"):
        card.pop(unstable)
    card["config"].pop("out")
    return card


def test_same_command_same_answer_with_1_and_2_threads_and_test_evidence_recomputes(
    tmp_path: Path, data_root: Path
) -> None:
    one = _compress_with_threads(tmp_path / "one", data_root, ambient=1)
    two = _compress_with_threads(tmp_path / "two", data_root, ambient=2)
    assert (tmp_path / "one" / "search.jsonl").read_text() == (tmp_path / "two" / "search.jsonl").read_text()
    assert one == two
    assert one["choice"]["decision rule"].startswith("certified")
    assert all(row["lower_bound"] is not None for row in one["search"])
    # the flips and McNemar on the card, recomputed from the shipped model and the original on the test split
    meta = json.loads(GOLDEN.with_suffix(".json").read_text())
    splits = splits_for_checkpoint(meta, data_root=str(data_root))
    test = stack_samples(splits.test, range(len(splits.test)))
    original, _ = load_checkpoint(GOLDEN)
    small, _ = load_checkpoint(tmp_path / "one" / "model.safetensors")
    before, after = (predict(m, test)[0].argmax(1) for m in (original, small))
    labels = test[1].numpy()
    flips = {row["class_name"]: row for row in one["promise"]["flips"]}
    for index, name in enumerate(splits.class_names):
        members = labels == index
        wrong = int(((before == labels) & (after != labels) & members).sum())
        right = int(((before != labels) & (after == labels) & members).sum())
        assert (flips[name]["newly_wrong"], flips[name]["newly_right"]) == (wrong, right)
    worse = sum(r["newly_wrong"] for r in flips.values())
    better = sum(r["newly_right"] for r in flips.values())
    expected = 1.0 if worse + better == 0 else binomtest(worse, worse + better, 0.5).pvalue
    assert one["promise"]["mcnemar p"] == pytest.approx(expected)
    verdict = one["promise"]["non-inferiority"]["balanced_accuracy"]["verdict"]
    assert verdict in ("non-inferior at margin 0.05", "not shown")
    text = (tmp_path / "one" / "card.md").read_text()
    assert "## Promise on test" in text and verdict in text
    if worse + better:  # the gallery of changed predictions is on the card
        assert (tmp_path / "one" / "flips.png").is_file() and "(flips.png)" in text
    else:
        assert "gallery" not in one["promise"]
