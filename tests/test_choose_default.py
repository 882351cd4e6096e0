"""scripts/choose_default.py: the product default is the best admissible setting, a collapsing control excludes one."""

from __future__ import annotations

from helpers import load_script

choose_default = load_script("scripts/choose_default.py")

PAPER_BN = ("global", "none", "signed", "bn")
MEAN_BN = ("global", "mean", "signed", "bn")


def _means(lrp_paper: float, magnitude_paper: float) -> dict:
    means = {}
    for setting in choose_default.ORDER:
        for method in choose_default.METHODS:
            value = lrp_paper if setting == PAPER_BN else (0.3 if setting == MEAN_BN else 0.1)
            means[(method, setting)] = {0.01: value, 0.05: value}
        for control in choose_default.CONTROLS:
            value = magnitude_paper if setting == PAPER_BN and control == "magnitude" else 0.2
            means[(control, setting)] = {0.01: value, 0.05: value}
    return means


def test_best_admissible_setting_wins() -> None:
    chosen, table = choose_default.choose({"a": _means(0.5, 0.2), "b": _means(0.5, 0.2)})
    assert chosen == PAPER_BN
    assert len(table) == len(choose_default.ORDER) and all(row["admissible"] for row in table)


def test_a_collapsing_control_on_one_dataset_excludes_the_setting() -> None:
    chosen, table = choose_default.choose({"a": _means(0.5, 0.2), "b": _means(0.5, 0.0)})
    assert chosen == MEAN_BN
    assert not next(row for row in table if row["setting"] == "/".join(PAPER_BN))["admissible"]


def test_ties_go_to_the_earlier_setting() -> None:
    flat = {key: {0.01: 0.2, 0.05: 0.2} for key in _means(0.1, 0.2)}
    chosen, _ = choose_default.choose({"a": flat})
    assert chosen == choose_default.ORDER[0]
