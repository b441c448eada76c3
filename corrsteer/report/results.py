"""The Results tables of report.md: accuracy beside balanced accuracy and per-class recall, the unsteered and
constant-answer rows, bootstrap intervals of each Δ, McNemar against the unsteered model and against CorrSteer-P, and
the answer distribution of every variant. A pure function of Comparisons and an Evaluation (corrsteer.report.stats)."""
from __future__ import annotations

from typing import Sequence

from corrsteer.report.stats import NO_ANSWER, ClassScore, Comparison, Evaluation, Interval
from corrsteer.report.tables import fmt_acc, fmt_p, fmt_pct, fmt_points, table

PLAIN_HEADER = ["variant", "accuracy [95% CI]", "Δ vs baseline (points)", "McNemar p", "SER",
                "changed / improved / worsened"]
FULL_HEADER = ["variant", "accuracy [95% CI]", "Δ accuracy (points) [bootstrap]", "balanced accuracy",
               "Δ balanced accuracy [bootstrap]", "per-class recall", "McNemar p", "McNemar p vs P", "SER",
               "changed / improved / worsened"]
DASH = "—"
TOP_FREE = 3          # answers shown per variant in the distribution table of a free-form task


def _align(header: Sequence[str]) -> list[str]:
    return [":---"] + ["---:"] * (len(header) - 1)


def fmt_points_ci(d: Interval) -> str:
    return f"{fmt_points(d.point)} [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]"


def fmt_diff_ci(d: Interval) -> str:
    return f"{d.point:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}]"


def fmt_recall(ev: Evaluation, recall: dict[str, float]) -> str:
    return " · ".join(f"{g} {r:.2f}" for g, r in recall.items()) if ev.classes else DASH


def _plain_row(c: Comparison) -> list[str]:
    return [c.variant, fmt_acc(c), fmt_points(c.delta), fmt_p(c.p_value), f"{c.ser:.3f}",
            f"{c.n_changed} / {c.n_improved} / {c.n_worsened}"]


def _full_row(c: Comparison, s: ClassScore, ev: Evaluation, vs_p: dict[str, float]) -> list[str]:
    p = vs_p.get(c.variant)
    return [c.variant, fmt_acc(c), fmt_points_ci(s.d_acc), f"{s.bacc:.3f}", fmt_diff_ci(s.d_bacc),
            fmt_recall(ev, s.recall), fmt_p(c.p_value), DASH if p is None else fmt_p(p), f"{c.ser:.3f}",
            f"{c.n_changed} / {c.n_improved} / {c.n_worsened}"]


def reference_rows(ev: Evaluation) -> list[list[str]]:
    """The unsteered model and the best constant answer, in the full table's columns."""
    b, k = ev.baseline, ev.constant
    return [["unsteered (baseline)", fmt_pct(b.acc), DASH, f"{b.bacc:.3f}", DASH, fmt_recall(ev, b.recall)]
            + [DASH] * 4,
            [f"constant answer {k.answer!r}", fmt_pct(k.acc), DASH, f"{k.bacc:.3f}", DASH, fmt_recall(ev, k.recall)]
            + [DASH] * 4]


def results_table(comparisons: Sequence[Comparison], ev: Evaluation | None, vs_p: dict[str, float] | None = None,
                  references: bool = False) -> list[str]:
    """One table of comparisons: the full columns when an Evaluation is given (references: the unsteered and
    constant-answer rows first), else accuracy, Δ, McNemar and SER only."""
    if ev is None:
        return table(PLAIN_HEADER, [_plain_row(c) for c in comparisons], _align(PLAIN_HEADER))
    rows = reference_rows(ev) if references else []
    rows += [_full_row(c, ev.scores[c.variant], ev, vs_p or {}) for c in comparisons]
    return table(FULL_HEADER, rows, _align(FULL_HEADER))


def _answer_name(a: str) -> str:
    return "(no answer)" if a == NO_ANSWER else a


def distribution_table(ev: Evaluation) -> list[str]:
    """Share of each predicted answer per variant (class tasks: one column per gold class, then other answers and no
    answer; free-form: the most frequent answers), with the golds' own shares as the first row."""
    scores = [ev.baseline, *ev.scores.values()]
    if not ev.classes:
        rows = [[s.variant, len(s.answers), "; ".join(f"{_answer_name(a)!r} {fmt_pct(x)}"
                                                      for a, x in s.answers[:TOP_FREE])] for s in scores]
        return table(["variant", "distinct answers", f"most frequent answers (top {TOP_FREE})"], rows,
                     [":---", "---:", ":---"])
    classes = list(ev.baseline.recall)
    header = ["variant", *classes, "other", "(no answer)"]
    rows = [["gold answers", *[fmt_pct(ev.gold_shares.get(g, 0.0)) for g in classes], fmt_pct(0.0), fmt_pct(0.0)]]
    for s in scores:
        share = dict(s.answers)
        other = sum(x for a, x in s.answers if a not in classes and a != NO_ANSWER)
        rows.append([s.variant, *[fmt_pct(share.get(g, 0.0)) for g in classes], fmt_pct(other),
                     fmt_pct(share.get(NO_ANSWER, 0.0))])
    return table(header, rows, _align(header))

