"""Claims from synthetic results tables whose answers are known: each verdict comes out as built in."""

from __future__ import annotations

import numpy as np
import pytest

from medprune.study.claims import ClaimSettings, compute_claims
from medprune.study.claims_report import Scale, claims_html, claims_markdown

RATES = [round(0.05 * i, 2) for i in range(20)]
FAMILIES = {"vit_small": "vit", "vgg_small": "vgg", "resnet_small": "resnet"}
#: Lossless rate built into each family's curves (inside the paper's ranges).
KNEE = {"vit_small": 0.75, "vgg_small": 0.5, "resnet_small": 0.3}
METHOD_PENALTY = {"lrp": 0.0, "dlb": 0.02, "ig": 0.04}
SAMPLING_PENALTY = {"clustering": 0.0, "random": 0.015, "confidence": 0.02}


def _accuracy(base, rate, knee, penalty, gain, noise):
    if rate == 0:
        return base
    drop = penalty * rate / 0.7 - gain * (rate <= 0.1) + (0.0 if rate <= knee else 2.0 * (rate - knee) + 0.06)
    return base - drop + noise


def synthetic_rows(reverse: bool = False, seed: int = 0) -> list[dict]:
    """val + test rows of 3 models x 2 training seeds x 3 methods x 3 samplings x 3 selection seeds x 20 rates.

    ``reverse`` flips every ordering (IG best, clustering worst), puts the knees far below the paper's ranges and
    makes small rates lower accuracy.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for model, knee in KNEE.items():
        knee = knee / 4 if reverse else knee
        for train_seed in (0, 1):
            checkpoint = f"{model}-{train_seed}"
            for split in ("val", "test"):
                base = {"checkpoint": checkpoint, "model": model, "dataset": "d", "split": split, "seed": 0}
                rows.append({**base, "method": "baseline", "sampling": "none", "rate": 0.0, "accuracy": 0.9})
            for method, m_pen in METHOD_PENALTY.items():
                for sampling, s_pen in SAMPLING_PENALTY.items():
                    for seed_ in (0, 1, 2):
                        penalty = (0.06 - m_pen) + (0.02 - s_pen) if reverse else m_pen + s_pen
                        gain = -0.01 if reverse else 0.01
                        for rate in RATES:
                            for split in ("val", "test"):
                                noise = float(rng.normal(0, 0.001))
                                rows.append(
                                    {
                                        "checkpoint": checkpoint,
                                        "model": model,
                                        "dataset": "d",
                                        "method": method,
                                        "sampling": sampling,
                                        "seed": seed_,
                                        "scope": "global",
                                        "normalize": "none",
                                        "sign": "signed",
                                        "recalibrate": "none",
                                        "rate": rate,
                                        "achieved_rate": rate,
                                        "split": split,
                                        "train_seed": train_seed,
                                        "accuracy": _accuracy(0.9, rate, knee, penalty, gain, noise),
                                    }
                                )
    return rows


def _verdicts(claims):
    return {(r["claim"], r.get("family")): r["verdict"] for r in claims}


SETTINGS = ClaimSettings(n_resamples=500)


def test_claims_as_built_are_reproduced():
    claims = compute_claims(synthetic_rows(), FAMILIES, SETTINGS)
    verdicts = _verdicts(claims)
    for family in ("vit", "vgg", "resnet"):
        assert verdicts[("a", family)] == "reproduced"
    assert verdicts[("a-order", "vit-vgg")] == "reproduced" and verdicts[("a-order", "vgg-resnet")] == "reproduced"
    assert verdicts[("b:lrp-dlb", None)] == "reproduced" and verdicts[("b:dlb-ig", None)] == "reproduced"
    assert verdicts[("b", None)] == "reproduced"
    assert verdicts[("c", None)] == "reproduced"
    assert verdicts[("d", None)] == "reproduced"
    vit = next(r for r in claims if r["claim"] == "a" and r["family"] == "vit")
    assert vit["estimate"] == pytest.approx(0.75)
    assert (vit["n"], vit["n_rows"]) == (2, 6)  # 2 checkpoints (independent) x 3 selection seeds
    assert {r["setting"] for r in claims} == {"paper"}


def test_reversed_claims_are_refuted():
    verdicts = _verdicts(compute_claims(synthetic_rows(reverse=True), FAMILIES, SETTINGS))
    for family in ("vit", "vgg", "resnet"):
        assert verdicts[("a", family)] == "refuted"
    assert verdicts[("b", None)] == "refuted" and verdicts[("c", None)] == "refuted"
    assert verdicts[("d", None)] == "not shown"  # an existential claim is never refuted by a sample
    # the reversed families differ by half a grid step (0.05): below what the 0.1-step grid resolves
    assert verdicts[("a-order", "vit-vgg")] == "equivalent"


def test_choices_never_read_test_rows():
    rows = synthetic_rows()
    corrupted = [{**r, "accuracy": 0.0} if r["split"] == "test" and r["method"] != "baseline" else r for r in rows]
    clean = {(r["claim"], r.get("family")): r for r in compute_claims(rows, FAMILIES, SETTINGS)}
    bad = {(r["claim"], r.get("family")): r for r in compute_claims(corrupted, FAMILIES, SETTINGS)}
    for family in ("vit", "vgg", "resnet"):  # the lossless rate is chosen on validation: unchanged
        assert bad[("a", family)]["val_chosen_rate"] == clean[("a", family)]["val_chosen_rate"] > 0
        assert bad[("a", family)]["estimate"] == 0.0  # but no rate is confirmed on test any more
        assert bad[("a", family)]["verdict"] == "refuted"


def _flat(noise: float) -> list[dict]:
    """Every method and sampling the same, up to per-row noise of standard deviation ``noise``; half the checkpoints
    favour one side by ``noise``, half the other (a checkpoint-level effect that averages out)."""
    rng = np.random.default_rng(3)
    rows = []
    for r in synthetic_rows():
        if r["method"] != "baseline" and r["rate"] <= 0.7:
            side = 1 if r["checkpoint"].endswith("0") else -1
            shift = side * noise * (r["method"] == "lrp")
            r = {**r, "accuracy": 0.9 + shift + float(rng.normal(0, noise))}
        rows.append(r)
    return rows


def test_no_difference_is_equivalent_when_precise_and_inconclusive_when_not():
    precise = _verdicts(compute_claims(_flat(0.002), FAMILIES, SETTINGS))
    assert precise[("b:lrp-dlb", None)] == "equivalent" and precise[("c", None)] == "equivalent"
    noisy = _verdicts(compute_claims(_flat(0.05), FAMILIES, SETTINGS))
    assert noisy[("b:lrp-dlb", None)] == "inconclusive"  # neither a difference nor equivalence within 1 point


def test_claims_need_validation_rows():
    rows = [r for r in synthetic_rows() if r["split"] == "test"]
    with pytest.raises(ValueError, match="validation"):
        compute_claims(rows, FAMILIES, SETTINGS)


def test_markdown_states_scale_and_every_verdict():
    claims = compute_claims(synthetic_rows(), FAMILIES, SETTINGS)
    scale = Scale([28], {"vgg_small": 316098}, ["pneumoniamnist"], 6, [0, 1], [0, 1, 2])
    text = claims_markdown(claims, scale, SETTINGS)
    assert "28 px" in text and "NOT the paper's scale" in text and "6 checkpoints" in text
    assert text.count("**reproduced**") == sum(r["verdict"] == "reproduced" for r in claims)
    paper = Scale([224], {"vgg19": 1, "resnet50": 1, "vit_b_16": 1}, ["a"], 12, [0, 1], [0, 1, 2])
    assert "NOT the paper's scale" not in paper.describe()


def test_html_section_has_the_markdown_rows_and_escapes_the_scale():
    claims = compute_claims(synthetic_rows(reverse=True), FAMILIES, SETTINGS)
    scale = Scale([28], {"vgg_small": 316098}, ["pneumoniamnist"], 6, [0, 1], [0, 1, 2])
    page = claims_html(claims, scale, SETTINGS)
    markdown = claims_markdown(claims, scale, SETTINGS)
    assert page.count("<tr><td>") == len(claims) == markdown.count("\n| ") - 1  # header row in Markdown only
    for verdict in {r["verdict"] for r in claims}:
        assert page.count(f"<td>{verdict}</td></tr>") == markdown.count(f"| **{verdict}** |")
    assert "NOT the paper&#x27;s scale" in page and "28 px" in page and "<li>a (paper):" in page


def test_fine_tuned_curves_are_their_own_setting_not_pooled_with_the_paper():
    plain = synthetic_rows()
    tuned = [{**r, "finetune_epochs": 2, "distill": True} for r in plain if r["method"] != "baseline"]
    claims = compute_claims(plain + tuned, FAMILIES, SETTINGS)
    assert {r["setting"] for r in claims} == {"paper", "paper+ft2+kd"}
    vit = [r for r in claims if r["claim"] == "a" and r["family"] == "vit"]
    # 2 checkpoints (the independent runs) x 3 seeds each, not 12 pooled runs
    assert [(r["n"], r["n_rows"]) for r in vit] == [(2, 6), (2, 6)]
