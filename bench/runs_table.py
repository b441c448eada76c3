"""Summarise `corrsteer run` outputs on several tasks into one markdown table (bench/results/runs/all-tasks.md).

    python3 -m bench.runs_table RUN_DIR [RUN_DIR ...] > all-tasks.md

Each RUN_DIR holds predictions.jsonl and report.md of one run; a cell is test accuracy (change in points vs the
baseline, exact McNemar p, side-effect ratio), from corrsteer.report.stats.compare on the saved predictions.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from corrsteer.report.stats import compare

VARIANTS = ("CorrSteer-S", "CorrSteer-A", "CorrSteer-P", "raw-residual", "mean-difference")


def _cell(c) -> str:
    p = "<1e-4" if c.p_value < 1e-4 else f"{c.p_value:.2g}"
    return f"{100 * c.acc:.1f}% ({100 * c.delta:+.1f}, p {p}, SER {c.ser:.2f})"


def row(run: Path) -> str:
    by = {}
    for line in (run / "predictions.jsonl").read_text().splitlines():
        r = json.loads(line)
        by.setdefault(r["variant"], []).append(r)
    base = by["baseline"]
    report = (run / "report.md").read_text()
    layers = re.search(r"P_layers[^\[]*(\[[^\]]*\])", report)
    scorer = re.search(r"scorer[`:|* ]+([^|\n]+)", report)
    cells = [_cell(compare(v, base, by[v])) if v in by else "" for v in VARIANTS]
    acc = 100 * sum(r["correct"] for r in base) / max(1, len(base))
    name = scorer.group(1).split(":")[0].strip() if scorer else ""
    return (f"| {run.name} | {name} | {len(base)} | {acc:.1f}% | "
            + " | ".join(cells) + f" | {layers.group(1) if layers else ''} |")


def main(argv) -> int:
    print("| task | scorer | n test | baseline | " + " | ".join(VARIANTS) + " | P layers |")
    print("|---|---|---:|---:|" + "---:|" * len(VARIANTS) + "---|")
    for d in argv:
        print(row(Path(d)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
