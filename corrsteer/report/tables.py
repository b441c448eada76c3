"""Formatting for the markdown report: percentages, points, p-values, numbers and pipe tables."""
from __future__ import annotations

import math
from typing import Sequence

from corrsteer.report.stats import Comparison


def fmt_pct(x: float, digits: int = 1) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.{digits}f}%"


def fmt_acc(c: Comparison) -> str:
    """'72.3% [68.1, 76.2]' (accuracy and its 95% interval, in percent)."""
    return f"{fmt_pct(c.acc)} [{100 * c.lo:.1f}, {100 * c.hi:.1f}]"


def fmt_points(delta: float) -> str:
    """Signed difference in percentage points: '+3.1', '-0.4', '0.0'."""
    if not math.isfinite(delta):
        return "n/a"
    s = f"{100 * delta:+.1f}"
    return "0.0" if s in ("+0.0", "-0.0") else s


def fmt_p(p: float) -> str:
    """p-value with 3 significant digits ('0.0123', '1.00'), or '<1e-4'."""
    if not math.isfinite(p):
        return "n/a"
    if p < 1e-4:
        return "<1e-4"
    return f"{p:#.3g}"


def fmt_num(x, digits: int = 3, alt: bool = False) -> str:
    """Floats with `digits` significant digits (alt: keep trailing zeros, '1.50'); anything else as str."""
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, float):
        return "n/a" if not math.isfinite(x) else (f"{x:#.{digits}g}" if alt else f"{x:.{digits}g}")
    return str(x)


def cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence], align: Sequence[str] | None = None) -> list[str]:
    """A markdown pipe table: header, alignment row (default '---'), one line a row; cells escaped."""
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines
