"""report_inputs.json for a run made before `corrsteer run` wrote one, read back from that run's own report.md and
config.json, so `corrsteer report DIR` can render it again with the current code.

    python3 -m bench.report_inputs_from_md RUN_DIR [RUN_DIR ...]

What it takes from report.md: the title, the Settings table (as printed), the top-features table (Pearson r, share
active and coefficient as printed, so rounded to 3 decimals / 0.1% / 3 significant digits; the ranking's own score
was not printed, so it is recorded as missing and the report says so) and any lines between the top features and the
plots. From the Settings table: whether the task has classes (selection_measure) and the ranking. From config.json:
the prompting templates. Run once on the runs under bench/results/runs/ committed before report_inputs.json existed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from corrsteer.report.render import INPUTS, Feature, write_inputs


def _cells(line: str) -> list[str]:
    parts, cur, i = [], "", 1
    while i < len(line):
        if line[i] == "\\" and line[i + 1:i + 2] == "|":
            cur, i = cur + "|", i + 2
            continue
        if line[i] == "|":
            parts.append(cur.strip())
            cur = ""
        else:
            cur += line[i]
        i += 1
    return parts


def _table_after(lines: list[str], heading: str) -> list[list[str]]:
    start = lines.index(heading) + 2
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    return rows


def _section(lines: list[str], start: str, end: str) -> list[str]:
    i = next(k for k, line in enumerate(lines) if line.startswith(start))
    j = lines.index(end)
    return lines[i + 1:j]


def inputs_of(run: Path) -> dict:
    lines = (run / "report.md").read_text(encoding="utf-8").splitlines()
    settings = {k: v for k, v in _table_after(lines, "## Settings")}
    top: dict[int, list[Feature]] = {}
    for layer, feat, r, freq, coef in _table_after(lines, "## Top features"):
        top.setdefault(int(layer), []).append(Feature(int(feat), float(r), None, float(freq.rstrip("%")) / 100,
                                                      float(coef)))
    extra = [x for x in _section(lines, "Best layer:", "## Plots") if x]
    prompts = json.loads((run / "config.json").read_text())["prompts"]
    texts = {"prompting": prompts["prompting"]} | ({"few-shot": prompts["few_shot"]} if prompts.get("few_shot") else {})
    return dict(title=lines[0][2:], settings=settings, classes=settings["selection_measure"] == "balanced accuracy",
                ranking=settings["ranking"], top_features=top, prompts=texts, extra=extra)


def main(argv) -> int:
    for d in map(Path, argv):
        if (d / INPUTS).exists():
            print(f"{d}: {INPUTS} exists, left as it is")
            continue
        write_inputs(d, **inputs_of(d))
        print(f"{d}: {INPUTS} written from report.md and config.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
