"""The Results tables of report.md: accuracy beside balanced accuracy and per-class recall, the unsteered and
constant-answer rows, bootstrap intervals of each Δ, McNemar against the unsteered model and against CorrSteer-P, and
the answer distribution of every variant. A pure function of Comparisons and an Evaluation (corrsteer.report.stats)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from corrsteer.report.contrasts import (
    CONSTANT,
    P,
    draws_summary,
    point,
    random_draws,
    secondary_intervals,
    vs_p,
)
from corrsteer.report.stats import NO_ANSWER, ClassScore, Comparison, Evaluation, Interval, bootstrap_interval
from corrsteer.report.tables import fmt_acc, fmt_p, fmt_pct, fmt_points, table

PLAIN_HEADER = ["variant", "accuracy [95% CI]", "Δ vs baseline (points)", "McNemar p (accuracy)", "SER",
                "changed / improved / worsened"]
FULL_HEADER = ["variant", "accuracy [95% CI]", "Δ accuracy (points) [bootstrap]", "balanced accuracy",
               "Δ balanced accuracy [bootstrap]", "Δ vs unsteered [simultaneous]", "Δ vs P [bootstrap]",
               "per-class recall", "McNemar p (accuracy)", "McNemar p vs P (accuracy)", "SER",
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


def _full_row(c: Comparison, s: ClassScore, ev: Evaluation, mc_vs_p: dict[str, float], sim: dict,
              dvp: dict) -> list[str]:
    p = mc_vs_p.get(c.variant)
    d_sim = sim.get((c.variant, "baseline"))
    return [c.variant, fmt_acc(c), fmt_points_ci(s.d_acc), f"{s.bacc:.3f}", fmt_diff_ci(s.d_bacc),
            DASH if d_sim is None else fmt_diff_ci(d_sim), _vs_p_cell(dvp, c.variant), fmt_recall(ev, s.recall),
            fmt_p(c.p_value), DASH if p is None else fmt_p(p), f"{c.ser:.3f}",
            f"{c.n_changed} / {c.n_improved} / {c.n_worsened}"]


def _vs_p_cell(dvp: dict, name: str) -> str:
    return fmt_diff_ci(dvp[name]) if name in dvp else DASH


def reference_rows(ev: Evaluation, dvp: dict) -> list[list[str]]:
    """The unsteered model and (tasks with classes) the best constant answer, in the full table's columns."""
    b, k = ev.baseline, ev.constant
    rows = [["unsteered (baseline)", fmt_pct(b.acc), DASH, f"{b.bacc:.3f}", DASH, DASH, _vs_p_cell(dvp, "baseline"),
             fmt_recall(ev, b.recall)] + [DASH] * 4]
    if ev.classes:
        rows.append([f"constant answer {k.answer!r}", fmt_pct(k.acc), DASH, f"{k.bacc:.3f}", DASH, DASH,
                     _vs_p_cell(dvp, CONSTANT), fmt_recall(ev, k.recall)] + [DASH] * 4)
    return rows


def draws_row(ev: Evaluation) -> list[list[str]]:
    """With several random-feature draws: one row of their mean, its Δ vs P (mean over draws on each resample)."""
    dr = draws_summary(ev)
    if dr is None:
        return []
    cell = DASH
    if P in ev.scores:
        draws = random_draws(ev.scores)
        samples = np.mean([ev.boot[n] for n in draws], axis=0) - ev.boot[P]
        cell = fmt_diff_ci(bootstrap_interval(dr.mean - point(ev, P), samples, ev.level))
    return [[f"random features (mean of {dr.n} draws; range {dr.lo:.3f}-{dr.hi:.3f})", DASH, DASH,
             f"{dr.mean:.3f}", DASH, DASH, cell, DASH] + [DASH] * 4]


def results_table(comparisons: Sequence[Comparison], ev: Evaluation | None, mc_vs_p: dict[str, float] | None = None,
                  references: bool = False) -> list[str]:
    """One table of comparisons: the full columns when an Evaluation is given (references: the unsteered and
    constant-answer rows first), else accuracy, Δ, McNemar and SER only."""
    if ev is None:
        return table(PLAIN_HEADER, [_plain_row(c) for c in comparisons], _align(PLAIN_HEADER))
    sim, dvp = secondary_intervals(ev), vs_p(ev)
    rows = reference_rows(ev, dvp) if references else []
    rows += [_full_row(c, ev.scores[c.variant], ev, mc_vs_p or {}, sim, dvp) for c in comparisons]
    if any(c.variant in random_draws(ev.scores) for c in comparisons):
        rows += draws_row(ev)
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

