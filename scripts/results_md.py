"""Write docs/results.md (to stdout) from the reports of scripts/results.sh: per dataset the report's results.md
(Table 1 per protocol with CIs, lossless rates chosen on validation and confirmed on test, paired verdicts) and the
setting search: per method, the settings ranked by mean validation lossless rate (the product default's evidence).

    python scripts/results_md.py runs/results pneumoniamnist breastmnist > docs/results.md
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from medprune.report.markdown import markdown_table
from medprune.sweep.protocols import PROTOCOLS, protocol_name
from medprune.sweep.table import read_csv

SETTING = ("scope", "normalize", "sign", "recalibrate")


def search_section(summary_csv: Path, tolerance: str = "0.01", top: int = 5) -> str:
    """Per method (sampling random), the ``top`` settings by mean validation lossless rate at ``tolerance``."""
    rows = read_csv(summary_csv)
    by_method = defaultdict(list)
    for row in rows:
        by_method[(row["method"], row["sampling"])].append(row)
    parts = [
        f"Metric: {rows[0]['metric'] if rows else '?'}; tolerance {tolerance}; validation split; mean over runs.\n"
    ]
    for (method, sampling), members in sorted(by_method.items()):
        ranked = sorted(members, key=lambda r: -float(r[f"achieved@{tolerance}"]))[:top]
        shown = [
            {
                "setting": "/".join(str(r[f]) for f in SETTING)
                + (f" ({protocol_name(r)})" if protocol_name(r) else ""),
                "rate": f"{float(r[f'achieved@{tolerance}']):.3f}",
                "ci": f"[{float(r[f'low@{tolerance}'] or 0):.2f}, {float(r[f'high@{tolerance}'] or 0):.2f}]",
                "test": "–" if r.get(f"test_drop@{tolerance}") is None else f"{float(r[f'test_drop@{tolerance}']):.3f}",
                # reports since issue 21: n = training checkpoints beside the distinct runs (rows)
                "n": str(int(r["n"])) + (f" ckpt ({int(r['rows'])} rows)" if r.get("rows") is not None else " runs"),
            }
            for r in ranked
        ]
        parts.append(f"#### {method} / {sampling}\n")
        parts.append(
            markdown_table(
                shown,
                ["setting", "rate", "ci", "test", "n"],
                ["setting", "lossless rate (val)", "95% CI", "test drop there", "n"],
            )
        )
    return "\n".join(parts)


def main(root: str, *datasets: str) -> None:
    default = "/".join(PROTOCOLS["default"].as_dict().values())
    print("# Results (issue 9): choices on validation, 2 training seeds x 3 selection seeds, CIs, paired verdicts\n")
    print(f"Written by scripts/results.sh. Protocols: paper = global/none/signed/none; default = {default}.\n")
    for dataset in datasets:
        report = Path(root) / dataset / "report" / "results.md"
        print(report.read_text() if report.is_file() else f"_{report} missing: run scripts/results.sh_\n")
        search = Path(root) / dataset / "search-report" / "lossless_summary.csv"
        print(f"### Setting search on {dataset} (validation)\n")
        print(search_section(search) if search.is_file() else f"_{search} missing_\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
