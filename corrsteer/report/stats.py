"""Evaluation statistics: accuracy with Wilson intervals, exact McNemar tests and the side-effect ratio.

Outcomes may be booleans or real-valued rewards in [0, 1]. Accuracy is always the mean of the values as given;
the paired statistics (McNemar, side-effect ratio, improved / worsened counts) binarise them as ``correct >= 0.5``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

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


# ---------------------------------------------------------------------------------------------------------------
# classes: per-class recall, balanced accuracy, the constant answer, answer shares, a paired bootstrap
# ---------------------------------------------------------------------------------------------------------------
NO_ANSWER = ""                             # the pred when no answer was read
CONSTANT = "constant answer"               # Evaluation.boot's key of the best constant answer


def class_recall(rows: list[dict]) -> dict[str, float]:
    """{gold class: mean `correct` over the rows of that gold} (recall for 0/1 outcomes), classes sorted."""
    sums: dict[str, list[float]] = {}
    for r in rows:
        sums.setdefault(str(r["gold"]), []).append(float(r["correct"]))
    return {g: sum(v) / len(v) for g, v in sorted(sums.items())}


def balanced_accuracy(rows: list[dict], classes: bool = True) -> float:
    """Mean per-class recall over the gold classes present in `rows` (dicts with gold, pred, correct); 0.0 for none.

    classes=False (free-form tasks, see has_classes) gives plain accuracy: there every gold is its own answer and a
    per-gold mean would only reweight items."""
    if not rows:
        return 0.0
    if not classes:
        return sum(float(r["correct"]) for r in rows) / len(rows)
    rec = class_recall(rows)
    return sum(rec.values()) / len(rec)


@dataclass
class ConstantAnswer:
    """The best single answer given to every test item: its accuracy, balanced accuracy and per-class recall."""
    answer: str
    acc: float
    bacc: float
    recall: dict[str, float]


def constant_answers(rows: list[dict], classes: bool = True) -> list[ConstantAnswer]:
    """For each gold answer c of `rows`: the scores of answering c to every item (accuracy = share of golds equal to
    c; balanced accuracy = 1 / number of classes, or the accuracy for free-form tasks), best accuracy first."""
    golds = [str(r["gold"]) for r in rows]
    present = sorted(set(golds))
    out = []
    for c in present:
        acc = golds.count(c) / len(golds)
        recall = {g: float(g == c) for g in present}
        out.append(ConstantAnswer(c, acc, 1.0 / len(present) if classes else acc, recall))
    return sorted(out, key=lambda a: -a.acc)


def constant_answer(rows: list[dict], classes: bool = True) -> ConstantAnswer:
    """The best constant answer by accuracy (ties: the first answer in sorted order)."""
    found = constant_answers(rows, classes)
    return found[0] if found else ConstantAnswer(NO_ANSWER, 0.0, 0.0, {})


def answer_distribution(rows: list[dict]) -> list[tuple[str, float]]:
    """[(pred, share of rows)], most frequent first (ties in sorted order); "" = no answer read."""
    counts: dict[str, int] = {}
    for r in rows:
        p = str(r.get("pred") or NO_ANSWER)
        counts[p] = counts.get(p, 0) + 1
    n = max(1, len(rows))
    return [(p, c / n) for p, c in sorted(counts.items(), key=lambda x: (-x[1], x[0]))]


@dataclass
class Interval:
    """A point estimate and its paired-bootstrap percentile interval (widened to contain the point)."""
    point: float
    lo: float
    hi: float

    @property
    def above_zero(self) -> bool:
        return self.lo > 0


@dataclass
class ClassScore:
    """One variant on the test items: accuracy, balanced accuracy, per-class recall, its answer shares and, against
    the unsteered model and the constant answer, paired-bootstrap intervals of the differences."""
    variant: str
    n: int
    acc: float
    bacc: float
    recall: dict[str, float]
    answers: list[tuple[str, float]]
    d_acc: Interval          # acc - unsteered acc
    d_bacc: Interval         # bacc - unsteered bacc
    vs_constant: Interval    # the headline metric (bacc, or acc for free-form) - the constant answer's
    n_changed: int = 0       # answers (preds) that differ from the unsteered model's


@dataclass
class Evaluation:
    """Every variant's ClassScore against the unsteered model ("baseline") and the best constant answer."""
    classes: bool            # has_classes(task kind): the headline metric is balanced accuracy, else accuracy
    baseline: ClassScore
    constant: ConstantAnswer
    scores: dict[str, ClassScore]
    gold_shares: dict[str, float]     # {gold answer: share of the test items}
    n_boot: int
    seed: int
    level: float
    # the headline metric on each of the n_boot shared resamples: {variant: [n_boot]}, "baseline" and CONSTANT too
    boot: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def metric(self) -> str:
        return "balanced accuracy" if self.classes else "accuracy"


def _paired(base_rows: list[dict], rows: list[dict], which: str) -> list[dict]:
    """rows in the baseline's id order; ValueError when the ids differ."""
    by_id = _index(rows, which)
    if by_id.keys() != _index(base_rows, "baseline").keys():
        raise ValueError(f"{which}: ids differ from the baseline's")
    return [by_id[r["id"]] for r in base_rows]


def _boot_metrics(gold_idx, correct, n_cls: int, idx, classes: bool):
    """Per resample (rows of idx): accuracy, balanced accuracy and the constant answer's headline metric."""
    B, n = idx.shape
    flat = (np.arange(B)[:, None] * n_cls + gold_idx[idx]).ravel()
    counts = np.bincount(flat, minlength=B * n_cls).reshape(B, n_cls)
    sums = np.bincount(flat, weights=correct[idx].ravel(), minlength=B * n_cls).reshape(B, n_cls)
    acc = sums.sum(1) / n
    present = counts > 0
    if classes:
        bacc = np.where(present, sums / np.maximum(counts, 1), 0.0).sum(1) / present.sum(1)
        const = 1.0 / present.sum(1)
    else:
        bacc, const = acc, counts.max(1) / n
    return acc, bacc, const


def bootstrap_interval(point: float, samples, level: float) -> Interval:
    """The percentile interval of `samples` at `level`, widened to contain `point`."""
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return Interval(point, min(float(lo), point), max(float(hi), point))


def evaluate(rows_by_variant: dict[str, list[dict]], classes: bool = True, baseline: str = "baseline",
             n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Evaluation:
    """ClassScores of every variant in rows_by_variant (rows: id, gold, pred, correct), paired by id with the rows
    under `baseline`; intervals from n_boot resamples (seeded) of the test items, the same resamples for every
    variant."""
    base = rows_by_variant[baseline]
    golds = sorted({str(r["gold"]) for r in base})
    gold_idx = np.array([golds.index(str(r["gold"])) for r in base], dtype=np.int64)
    idx = np.random.default_rng(seed).integers(0, max(1, len(base)), size=(n_boot, len(base)))
    const = constant_answer(base, classes)
    b_cor = np.array([float(r["correct"]) for r in base])
    b_acc, b_bacc, b_const = _boot_metrics(gold_idx, b_cor, len(golds), idx, classes)

    boot = {CONSTANT: b_const}

    def score(name: str, rows: list[dict]) -> ClassScore:
        rows = _paired(base, rows, name)
        cor = np.array([float(r["correct"]) for r in rows])
        acc, bacc = balanced_accuracy(rows, False), balanced_accuracy(rows, classes)
        s_acc, s_bacc, _ = _boot_metrics(gold_idx, cor, len(golds), idx, classes)
        metric, s_metric = (bacc, s_bacc) if classes else (acc, s_acc)
        boot[name] = s_metric
        changed = sum(str(r.get("pred")) != str(b.get("pred")) for r, b in zip(rows, base))
        return ClassScore(name, len(rows), acc, bacc, class_recall(rows), answer_distribution(rows),
                          bootstrap_interval(acc - balanced_accuracy(base, False), s_acc - b_acc, level),
                          bootstrap_interval(bacc - balanced_accuracy(base, classes), s_bacc - b_bacc, level),
                          bootstrap_interval(metric - (const.bacc if classes else const.acc), s_metric - b_const,
                                             level),
                          changed)

    scores = {name: score(name, rows) for name, rows in rows_by_variant.items()}
    shares = {g: float(np.mean(gold_idx == k)) for k, g in enumerate(golds)}
    boot["baseline"] = boot.pop(baseline)
    return Evaluation(classes, scores.pop(baseline), const, scores, shares, n_boot, seed, level, boot)
