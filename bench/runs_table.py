"""Summarise `corrsteer run` outputs on several tasks into one markdown table (bench/results/runs/all-tasks.md).

    python3 -m bench.runs_table RUN_DIR [RUN_DIR ...] > table.md

Each RUN_DIR holds a finished run's outputs (config.json, predictions.jsonl, report_inputs.json). One row per run,
on the run's headline measure (balanced accuracy for tasks with classes, accuracy for free-form ones): the unsteered
model, CorrSteer-P, and P minus each reference with its 95% paired-bootstrap interval (corrsteer.report.contrasts,
the numbers the report's headline states), then the verdict: "gain" only when every interval lies above 0, else
which references P is not resolved against (interval contains 0) or is worse than (interval below 0).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from corrsteer.report.contrasts import P, p_contrasts, point
from corrsteer.report.render import CONFIG, INPUTS, PREDICTIONS, read_predictions
from corrsteer.report.stats import evaluate

REFS = ("constant", "random-feature", "prompt", "mean-difference")
HEADER = ["run", "ranking", "n test", "measure", "unsteered", "CorrSteer-P", "P − unsteered", "P − constant answer",
          "P − random feature", "P − best prompt", "P − mean-difference", "P layers", "verdict"]


def _ci(d) -> str:
    return f"{d.point:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}]"


def verdict(ev, contrasts) -> str:
    if ev.scores[P].n_changed == 0:
        return "P changed no answer"
    if all(c.d.above_zero for c in contrasts):
        return "gain"
    worse = [c.key for c in contrasts if c.d.hi < 0]
    open_ = [c.key for c in contrasts if not c.d.above_zero and c.d.hi >= 0]
    parts = ([f"not resolved vs {', '.join(open_)}"] if open_ else []) + ([f"worse than {', '.join(worse)}"]
                                                                          if worse else [])
    return "; ".join(parts)


def row(run: Path) -> str:
    inp = json.loads((run / INPUTS).read_text())
    seed = int(json.loads((run / CONFIG).read_text()).get("settings", {}).get("seed", 0))
    ev = evaluate(read_predictions(run / PREDICTIONS), inp["classes"], seed=seed)
    cs = {c.key: c for c in p_contrasts(ev)}
    cells = [_ci(cs[k].d) if k in cs else "—" for k in ("unsteered", *REFS)]
    return "| " + " | ".join([run.name, inp["ranking"], str(ev.baseline.n), ev.metric, f"{point(ev, 'baseline'):.3f}",
                              f"{point(ev, P):.3f}", *cells, str(inp["settings"].get("P_layers", "")),
                              verdict(ev, list(cs.values()))]) + " |"


def main(argv) -> int:
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * 9 + ["---"] * 2) + "|")
    for d in argv:
        print(row(Path(d)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
