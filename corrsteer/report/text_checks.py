"""What steering did to the text: per variant the most frequent outputs, how many distinct ones, and warnings when a
variant collapses onto a few strings, changes the answer format of most items, or gets the same text scored right
for different gold answers (a scorer hole). Used by corrsteer.report.markdown; a pure function of the prediction
rows."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from corrsteer.report.tables import table

COLLAPSE_SHARE = 0.5        # one output string in at least this share of a variant's answers: a collapse
FORMAT_SHARE = 0.5          # more than this share of items changed answer format vs the baseline: a format change
TOP_K = 3                   # most frequent outputs shown per variant
SHOW_CHARS = 70             # outputs are cut to this many characters in the table


def answer_format(output: str) -> str:
    """A coarse shape of an output: empty / repetitive / short (<= 3 words) / sentence / several sentences /
    multi-line."""
    text = (output or "").strip()
    words = text.split()
    if not words:
        return "empty"
    top = Counter(w.lower() for w in words).most_common(1)[0][1]
    if len(words) >= 6 and top >= len(words) / 2:
        return "repetitive"
    if "\n" in text:
        return "multi-line"
    if len(words) <= 3:
        return "short"
    ends = len(re.findall(r"[.!?](?:\s|$)", text))
    return "sentence" if ends <= 1 else "several sentences"


@dataclass
class TextStats:
    variant: str
    n: int
    distinct: int
    top: list[tuple[str, int]]         # (output, count), most frequent first
    formats: Counter
    format_changed: int                # items whose format differs from the baseline's (0 for the baseline)
    warnings: list[str]


def _scorer_hole(rows: list[dict]) -> str:
    """An output text scored correct for items with different golds (the scorer accepts it whatever the answer)."""
    golds: dict[str, set] = {}
    for r in rows:
        if float(r.get("correct", 0)) >= 0.5 and r.get("output", "").strip():
            golds.setdefault(r["output"].strip(), set()).add(str(r.get("gold")))
    bad = [(o, g) for o, g in golds.items() if len(g) >= 2]
    if not bad:
        return ""
    o, g = max(bad, key=lambda x: len(x[1]))
    return (f"the same text is scored correct for {len(g)} different gold answers ({_short(o)!r}): check the "
            f"scorer")


def _short(text: str) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= SHOW_CHARS else text[:SHOW_CHARS - 1] + "…"


def text_stats(variant: str, rows: list[dict], base_rows: list[dict] | None) -> TextStats:
    """Statistics of one variant's outputs; base_rows (paired by id) for the format comparison."""
    outs = [(r.get("output") or "").strip() for r in rows]
    counts = Counter(outs)
    formats = Counter(answer_format(o) for o in outs)
    changed = 0
    if base_rows is not None:
        base = {r["id"]: answer_format(r.get("output") or "") for r in base_rows}
        changed = sum(base.get(r["id"]) != answer_format(r.get("output") or "") for r in rows)
    warnings = []
    n = len(rows)
    if n:
        top_out, top_n = counts.most_common(1)[0]
        if top_n / n >= COLLAPSE_SHARE:
            warnings.append(f"collapse: one output in {100 * top_n / n:.0f}% of answers ({_short(top_out)!r})")
        if base_rows is not None and changed / n > FORMAT_SHARE:
            warnings.append(f"format change: {100 * changed / n:.0f}% of items changed answer format "
                            f"(now mostly {formats.most_common(1)[0][0]})")
    hole = _scorer_hole(rows)
    if hole:
        warnings.append(hole)
    return TextStats(variant, n, len(counts), counts.most_common(TOP_K), formats, changed, warnings)


def text_section(outputs: dict[str, list[dict]], baseline: str = "baseline") -> list[str]:
    """Markdown lines of the report's 'What steering did to the text' section; outputs: {variant: rows with id,
    output, gold, correct}, the unsteered baseline under `baseline`."""

    lines = ["## What steering did to the text", ""]
    if not outputs:
        return lines + ["No outputs.", ""]
    base_rows = outputs.get(baseline)
    stats = [text_stats(v, rows, None if v == baseline else base_rows) for v, rows in outputs.items()]
    cells = []
    for st in stats:
        top = "; ".join(f"{_short(o)!r} ×{c}" for o, c in st.top)
        fmt = ", ".join(f"{k} {c}" for k, c in st.formats.most_common())
        changed = "—" if st.variant == baseline else f"{st.format_changed}/{st.n}"
        cells.append([st.variant, f"{st.distinct}/{st.n}", top, fmt, changed])
    lines += table(["variant", "distinct outputs", f"most frequent outputs (top {TOP_K})", "answer formats",
                     "format changed vs baseline"], cells, [":---", "---:", ":---", ":---", "---:"])
    warned = [(st.variant, w) for st in stats for w in st.warnings]
    lines += [""]
    if warned:
        lines += ["**Warnings** (read the outputs before trusting the accuracy above):", ""]
        lines += [f"- ⚠ {v}: {w}" for v, w in warned]
    else:
        lines.append("No collapse, format change or scorer hole detected.")
    lines += ["", f"Collapse: one output string in ≥ {100 * COLLAPSE_SHARE:.0f}% of a variant's answers. Format "
              f"change: more than {100 * FORMAT_SHARE:.0f}% of items answered in another shape than the baseline's "
              "(empty / repetitive / short / sentence / several sentences / multi-line).", ""]
    return lines
