"""The headline of a report's Results: plain sentences that a constant answer cannot fool.

A variant's gain is named only where it beats BOTH the unsteered model and the best constant answer on the headline
metric (balanced accuracy for tasks with classes, accuracy for free-form tasks), each with a paired-bootstrap
interval above 0. Every other variant whose accuracy or metric rose gets one sentence saying what happened instead:
the answer it leans on ("answers 'positive' to 85% of items"), that it is no better than a constant answer, or that
its interval includes 0.
"""
from __future__ import annotations

from typing import Sequence

from corrsteer.report.stats import NO_ANSWER, ClassScore, Evaluation

LEAN_SHARE = 0.5        # a variant's most frequent answer in at least this share of items is named in its sentence


def metric_of(ev: Evaluation, s: ClassScore) -> float:
    return s.bacc if ev.classes else s.acc


def constant_metric(ev: Evaluation) -> float:
    return ev.constant.bacc if ev.classes else ev.constant.acc


def is_gain(ev: Evaluation, s: ClassScore) -> bool:
    """Above the unsteered model and above the constant answer, both intervals above 0."""
    d = s.d_bacc if ev.classes else s.d_acc
    return d.above_zero and s.vs_constant.above_zero


def _constant(ev: Evaluation) -> str:
    """"a constant answer (0.50)"; free-form tasks name the answer (every class answer scores the same 1 / K on
    balanced accuracy, so none is named there)."""
    name = "" if ev.classes else f" {ev.constant.answer!r}"
    return f"a constant answer{name} ({constant_metric(ev):.2f})"


def _pct(level: float) -> str:
    return f"{100 * level:.0f}%"


def _gain_sentence(ev: Evaluation, s: ClassScore) -> str:
    d = s.d_bacc if ev.classes else s.d_acc
    return (f"{s.variant} raises {ev.metric} from {metric_of(ev, ev.baseline):.2f} (unsteered) to "
            f"{metric_of(ev, s):.2f} ({d.point:+.2f}, {_pct(ev.level)} bootstrap interval [{d.lo:+.2f}, "
            f"{d.hi:+.2f}]), above a constant answer ({constant_metric(ev):.2f}).")


def _lean(ev: Evaluation, s: ClassScore) -> str:
    """"answers 'positive' to 85% of items" when one answer dominates, else ""."""
    if not ev.classes or not s.answers:
        return ""
    top, share = s.answers[0]
    if share < LEAN_SHARE:
        return ""
    what = "no answer" if top == NO_ANSWER else repr(top)
    return f"answers {what} to {100 * share:.0f}% of items"


def _what_happened(ev: Evaluation, s: ClassScore) -> str:
    """One sentence on a variant that is not a gain."""
    m, b = metric_of(ev, s), metric_of(ev, ev.baseline)
    d = s.d_bacc if ev.classes else s.d_acc
    if not s.vs_constant.above_zero:
        why = f"no better than {_constant(ev)}"
    elif not d.above_zero:
        why = (f"not clearly above the unsteered model ({b:.2f}; {_pct(ev.level)} interval of the difference "
               f"[{d.lo:+.2f}, {d.hi:+.2f}] includes 0)")
    else:
        why = "not a gain"
    acc = f" (accuracy {100 * s.acc:.1f}% vs {100 * ev.baseline.acc:.1f}% unsteered)" if ev.classes else ""
    lean = _lean(ev, s)
    if lean:
        return f"{s.variant} {lean}: {ev.metric} {m:.2f}, {why}{acc}."
    return f"{s.variant}: {ev.metric} {m:.2f}, {why}{acc}."


def _prompt_vs_steering(ev: Evaluation, steering: Sequence[str], prompting: Sequence[str]) -> str:
    st = [ev.scores[n] for n in steering if n in ev.scores]
    pr = [ev.scores[n] for n in prompting if n in ev.scores]
    if not st or not pr:
        return ""
    bs = max(st, key=lambda s: metric_of(ev, s))
    bp = max(pr, key=lambda s: metric_of(ev, s))
    ms, mp = metric_of(ev, bs), metric_of(ev, bp)
    if not is_gain(ev, bs) and not is_gain(ev, bp):
        return (f"Neither steering nor a prompt gains here: the best steering variant {bs.variant} {ms:.2f}, the best "
                f"prompt {bp.variant} {mp:.2f} ({ev.metric}).")
    if mp >= ms:
        return (f"A prompt does at least as well as steering: {bp.variant} {mp:.2f} vs the best steering variant "
                f"{bs.variant} {ms:.2f} ({ev.metric}; McNemar in the Prompting table).")
    return (f"Steering does better than prompting: {bs.variant} {ms:.2f} vs the best prompt {bp.variant} {mp:.2f} "
            f"({ev.metric}; McNemar in the Prompting table).")


def headline(ev: Evaluation, steering: Sequence[str] = (), prompting: Sequence[str] = ()) -> list[str]:
    """The headline sentences: gains first (best first), else that no variant beats both references; then one
    sentence for each other variant whose accuracy or metric rose; then steering against the best prompt."""
    scores = list(ev.scores.values())
    wins = sorted((s for s in scores if is_gain(ev, s)), key=lambda s: -metric_of(ev, s))
    lines = [_gain_sentence(ev, s) for s in wins]
    if not wins:
        b = metric_of(ev, ev.baseline)
        if any(metric_of(ev, s) > b or s.acc > ev.baseline.acc for s in scores):
            lines.append(f"No variant beats both the unsteered model ({ev.metric} {b:.2f}) and {_constant(ev)}.")
        else:
            lines.append(f"No variant beats the unsteered model ({ev.metric} {b:.2f}).")
    rose = [s for s in scores if not is_gain(ev, s) and (s.acc > ev.baseline.acc or metric_of(ev, s) >
                                                          metric_of(ev, ev.baseline))]
    lines += [_what_happened(ev, s) for s in rose]
    last = _prompt_vs_steering(ev, steering, prompting)
    return lines + ([last] if last else [])
