"""Evaluation statistics: accuracy with Wilson intervals, exact McNemar tests and the side-effect ratio.

Outcomes may be booleans or real-valued rewards in [0, 1]. Accuracy is always the mean of the values as given;
the paired statistics (McNemar, side-effect ratio, improved / worsened counts) binarise them as ``correct >= 0.5``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

# Above this many discordant pairs the binomial tail is summed in log space instead of exact integers.
_EXACT_MAX_N = 5000


def _as_floats(values: Sequence[float | bool]) -> list[float]:
    out = [float(v) for v in values]
    for v in out:
        if not math.isfinite(v):
            raise ValueError(f"outcome values must be finite, got {v!r}")
    return out


def _as_bools(values: Sequence[float | bool]) -> list[bool]:
    return [v >= 0.5 for v in _as_floats(values)]


def balanced_accuracy(rows: Sequence[dict]) -> float:
    """Mean per-class recall over the classes present among the rows' gold answers (rows with gold, pred and
    correct; a class's recall is the mean `correct` of its rows): a constant answer scores 1 / (number of classes)
    however the classes are balanced. 0.0 with no rows."""
    by_gold: dict = {}
    for r in rows:
        by_gold.setdefault(str(r["gold"]), []).append(float(r["correct"]))
    if not by_gold:
        return 0.0
    return sum(sum(v) / len(v) for v in by_gold.values()) / len(by_gold)


def accuracy_ci(correct: Sequence[float | bool], z: float = 1.96) -> tuple[float, float, float]:
    """(accuracy, lo, hi) with the Wilson score interval (z = 1.96: 95%).

    ``correct`` holds booleans or rewards in [0, 1]; accuracy is their mean and the interval uses that mean as the
    observed proportion. With no samples nothing is known: (0.0, 0.0, 1.0).
    """
    vals = _as_floats(correct)
    n = len(vals)
    if n == 0:
        return 0.0, 0.0, 1.0
    p = sum(vals) / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(max(p * (1.0 - p), 0.0) / n + z2 / (4.0 * n * n))
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    # Clamp against rounding: the interval always contains the point estimate.
    return p, min(lo, p), max(hi, p)


def _binom_lower_tail_half(n: int, m: int) -> float:
    """P[Binomial(n, 1/2) <= m]."""
    if m >= n:
        return 1.0
    if m < 0:
        return 0.0
    if n <= _EXACT_MAX_N:
        total, term = 0, 1                       # term = C(n, k), exact integers
        for k in range(m + 1):
            total += term
            term = term * (n - k) // (k + 1)
        return total / (1 << n)                  # int / int is correctly rounded in Python
    # log space: log C(n, k) - n log 2, summed with log-sum-exp
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2.0)
            for k in range(m + 1)]
    top = max(logs)
    return math.exp(top) * math.fsum(math.exp(v - top) for v in logs)


def mcnemar_exact(base: Sequence[bool], steered: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value on paired outcomes.

    b = #(base right, steered wrong), c = #(base wrong, steered right);
    p = min(1, 2 · P[Binomial(b + c, 1/2) <= min(b, c)]), and 1.0 when b + c == 0.
    Float outcomes count as right when >= 0.5.
    """
    bs, ss = _as_bools(base), _as_bools(steered)
    if len(bs) != len(ss):
        raise ValueError(f"paired outcomes differ in length: {len(bs)} vs {len(ss)}")
    b = sum(1 for x, y in zip(bs, ss) if x and not y)
    c = sum(1 for x, y in zip(bs, ss) if y and not x)
    return mcnemar_from_counts(b, c)


def mcnemar_from_counts(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts b and c."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * _binom_lower_tail_half(n, min(b, c)))


def side_effect_ratio(base_pred: Sequence, steered_pred: Sequence, base_correct: Sequence[float | bool],
                      steered_correct: Sequence[float | bool]) -> float:
    """SER = #(changed answers that steering made worse) / #(answers that changed); 0.0 when nothing changed.

    An answer changed when base_pred != steered_pred; it was made worse when the base was right and the steered
    answer is wrong (outcomes >= 0.5 count as right). Changes that keep a wrong answer wrong, or fix it, count in
    the denominator only. Only changed answers count as worsened, so SER lies in [0, 1].
    """
    n = len(base_pred)
    if not (len(steered_pred) == len(base_correct) == len(steered_correct) == n):
        raise ValueError("side_effect_ratio: all four sequences must have the same length")
    bc, sc = _as_bools(base_correct), _as_bools(steered_correct)
    changed = worse = 0
    for bp, sp, b_ok, s_ok in zip(base_pred, steered_pred, bc, sc):
        if bp != sp:
            changed += 1
            worse += b_ok and not s_ok
    return worse / changed if changed else 0.0


@dataclass
class Comparison:
    """One variant against the baseline on the same test items."""
    variant: str
    n: int
    acc: float          # fraction in [0, 1]
    lo: float           # Wilson 95% interval of acc
    hi: float
    base_acc: float
    delta: float        # acc - base_acc (fraction; x100 for points)
    p_value: float      # exact McNemar, two-sided
    ser: float          # side-effect ratio
    n_changed: int      # answers that differ from the baseline's
    n_improved: int     # base wrong -> steered right
    n_worsened: int     # base right -> steered wrong

    def as_dict(self) -> dict:
        return asdict(self)


def _index(rows: list[dict], which: str) -> dict:
    out = {}
    for row in rows:
        key = row["id"]
        if key in out:
            raise ValueError(f"{which} rows: duplicate id {key!r}")
        out[key] = row
    return out


def compare(variant: str, base_rows: list[dict], steered_rows: list[dict]) -> Comparison:
    """Compare steered predictions with the baseline's, paired by ``id``.

    Rows are dicts with keys ``id``, ``pred`` and ``correct`` (bool or a reward in [0, 1]). Raises ValueError when
    the two sets of ids differ or an id repeats. Items are taken in the baseline's order.
    """
    base, steered = _index(base_rows, "baseline"), _index(steered_rows, variant)
    if base.keys() != steered.keys():
        only_b = sorted(map(str, base.keys() - steered.keys()))[:5]
        only_s = sorted(map(str, steered.keys() - base.keys()))[:5]
        raise ValueError(f"{variant}: ids differ from the baseline's (only in baseline: {only_b}, "
                         f"only in {variant}: {only_s})")
    ids = list(base.keys())
    b_pred = [base[i]["pred"] for i in ids]
    s_pred = [steered[i]["pred"] for i in ids]
    b_cor = _as_floats([base[i]["correct"] for i in ids])
    s_cor = _as_floats([steered[i]["correct"] for i in ids])

    acc, lo, hi = accuracy_ci(s_cor)
    base_acc = sum(b_cor) / len(b_cor) if b_cor else 0.0
    b_ok, s_ok = _as_bools(b_cor), _as_bools(s_cor)
    worsened = sum(1 for x, y in zip(b_ok, s_ok) if x and not y)
    improved = sum(1 for x, y in zip(b_ok, s_ok) if y and not x)
    return Comparison(
        variant=variant, n=len(ids), acc=acc, lo=lo, hi=hi, base_acc=base_acc, delta=acc - base_acc,
        p_value=mcnemar_from_counts(worsened, improved),
        ser=side_effect_ratio(b_pred, s_pred, b_cor, s_cor),
        n_changed=sum(1 for x, y in zip(b_pred, s_pred) if x != y),
        n_improved=improved, n_worsened=worsened,
    )
