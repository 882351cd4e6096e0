"""The claims section of a study: the scale it was run at, then one line per claim with its statistic and verdict.

The same section in two forms: Markdown (``claims.md``) and HTML (the first section of the study's ``report.html``).

>>> scale = Scale(image_sizes=[28], models={"resnet_small": 307794}, datasets=["pneumoniamnist"], checkpoints=2,
...               training_seeds=[0, 1], selection_seeds=[0, 1, 2])
>>> "28 px" in scale.describe()
True
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from medprune.report.html import table_html
from medprune.study.claims import ClaimSettings
from medprune.sweep.table import Row

__all__ = ["Scale", "claims_markdown", "claims_html", "CLAIMS_HEADING"]

#: The heading of the claims section (Markdown and HTML).
CLAIMS_HEADING = "Claims of the paper, tested"
#: The columns of the claims table, in order.
_COLUMNS = ("claim", "setting", "statistic", "estimate", "corrected CI", "n ckpt (rows)", "paper", "check", "verdict")

#: Paper scale, for the warning beside a smaller study.
PAPER_SCALE = "VGG19 (140 M parameters), ResNet50 (24 M), ViT-B/16 (86 M) at 224 px on four datasets"


@dataclass
class Scale:
    """What a study was run at (printed above its claims so a small-scale answer is not read as a paper one).

    Attributes:
        image_sizes: input sides (px). models: architecture -> parameter count. datasets: dataset names.
        checkpoints: trained models. training_seeds, selection_seeds: seeds. device: where it ran.
        notes: anything else worth saying (e.g. "quick").
    """

    image_sizes: list[int]
    models: dict[str, int]
    datasets: list[str]
    checkpoints: int
    training_seeds: list[int]
    selection_seeds: list[int]
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)

    @property
    def paper_scale(self) -> bool:
        """Whether this is the paper's setting (224 px, the three paper models)."""
        return set(self.models) >= {"vgg19", "resnet50", "vit_b_16"} and min(self.image_sizes, default=0) >= 224

    def describe(self) -> str:
        """One paragraph: image size, model sizes, datasets, numbers of checkpoints and seeds."""
        models = ", ".join(f"{name} ({_params(n)})" for name, n in self.models.items())
        sizes = "/".join(str(s) for s in sorted(set(self.image_sizes)))
        text = (
            f"Scale: {sizes} px; models {models}; datasets {', '.join(self.datasets)}; {self.checkpoints} checkpoints "
            f"({len(self.training_seeds)} training seeds: {_list(self.training_seeds)}), "
            f"{len(self.selection_seeds)} selection seeds ({_list(self.selection_seeds)}); device {self.device}."
        )
        if not self.paper_scale:
            text += (
                f" This is NOT the paper's scale ({PAPER_SCALE}): a verdict here says what holds for these small "
                "models, not whether the paper's numbers hold for its models."
            )
        return " ".join([text, *self.notes])


def _params(n: int) -> str:
    return f"{n / 1e6:.2f} M params" if n >= 1e5 else f"{n:,} params"


def _list(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):+.{digits}f}" if isinstance(value, float) and value < 0 else f"{float(value):.{digits}f}"


def _interval(row: Row) -> str:
    if row.get("low") is None or row.get("high") is None:
        return "–"
    level = row.get("confidence")
    suffix = f" ({float(level):.1%})" if level not in (None, "") else ""
    return f"[{_num(row['low'])}, {_num(row['high'])}]{suffix}"


def _method(settings: ClaimSettings, em: Callable[[str], str]) -> str:
    return (
        f"Method (docs/analysis-plan.md): drops are absolute (0.05 = 5 accuracy points) against the unpruned model "
        f"on the same split. Every choice (lossless rate at tolerance {settings.tolerance:g}, best curve, small rate) "
        "is made on validation rows; the numbers reported for a choice come from test rows. The independent runs are "
        "training checkpoints: n counts checkpoints (rows behind them in brackets), and every interval is a "
        f"clustered bootstrap (checkpoints, then the curves and selection seeds within each; percentile, "
        f"{settings.n_resamples} resamples, seed {settings.seed}). Each setting's sub-tests form one family: Holm's "
        f"correction at family-wise level {settings.alpha:g}, and the interval shown is the simultaneous (Bonferroni) "
        f"one at the confidence in brackets. Verdicts: {em('reproduced')} (the corrected test supports the claim), "
        f"{em('refuted')} (it contradicts it), {em('equivalent')} (a corrected TOST puts the difference inside "
        f"+-{settings.equivalence_margin:g} of accuracy, or +-{settings.rate_margin:g} of rate), "
        f"{em('inconclusive')} (neither), {em('not shown')} (an existential claim without support; a sample cannot "
        "refute it). Lossless rates are compared with the paper's bands on test-confirmed rates, at the grid's "
        f"resolution: inside the band widened by {settings.rate_margin / 2:g} to reproduce, outside it widened by "
        f"{settings.rate_margin:g} to refute."
    )


def _cells(row: Row) -> dict[str, str]:
    """One claim row as the table's text cells (the verdict without emphasis)."""
    check = ""
    if row["claim"] == "a":
        check = (
            f"val-chosen {_num(row.get('val_chosen_rate'), 2)}, test drop {_num(row.get('test_drop'))}, "
            f"{row.get('test_within_tolerance', 0):.0%} within"
        )
    elif row["claim"] == "d":
        control = row.get("random_control_fraction")
        check = f"{row.get('curves_confirmed', 0)}/{row.get('curves', 0)} curves confirmed"
        check += f"; random control {_num(control, 2)}" if control not in (None, "") else ""
    combined = row["claim"] in ("b", "c")
    label = row["statement"] if combined else f"({row['claim']}) {row['statement']}"
    values = (str(label), str(row["setting"]), str(row["statistic"]) if not combined else "—")
    n = f"{row.get('n', '')}" + (f" ({row['n_rows']})" if row.get("n_rows") not in (None, "") else "")
    values += (_num(row.get("estimate")), _interval(row), n, f"{row.get('paper', '')}", check)
    return dict(zip(_COLUMNS, (*values, f"{row.get('verdict', '')}"), strict=True))


def _notes(claims: Sequence[Row]) -> list[str]:
    return [f"{r['claim']} ({r['setting']}): {r['note']}" for r in claims if r.get("note")]


def claims_markdown(claims: Sequence[Row], scale: Scale, settings: ClaimSettings) -> str:
    """The claims section (markdown): scale, method, one table per claim family."""
    lines = [
        f"## {CLAIMS_HEADING}",
        "",
        scale.describe(),
        "",
        _method(settings, lambda text: f"*{text}*"),
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    for row in claims:
        cells = _cells(row)
        cells["verdict"] = f"**{cells['verdict']}**"
        lines.append("| " + " | ".join(cells.values()) + " |")
    notes = _notes(claims)
    if notes:
        lines += ["", "Notes:", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def claims_html(claims: Sequence[Row], scale: Scale, settings: ClaimSettings) -> str:
    """The claims section as HTML for the report page (its heading is :data:`CLAIMS_HEADING`): the scale, the
    method, the table (each claim, its statistic with CI and verdict) and the notes."""
    rows = [_cells(row) for row in claims]
    parts = [
        f"<p><b>{html.escape(scale.describe())}</b></p>",
        f"<p class='note'>{_method(settings, lambda text: f'<i>{html.escape(text)}</i>')}</p>",
        table_html(rows, list(_COLUMNS)),
    ]
    notes = _notes(claims)
    if notes:
        parts.append("<p>Notes:</p><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(parts)
