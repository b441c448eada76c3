"""The headline of a report's Results: plain sentences that cannot overclaim.

CorrSteer-P comes first (corrsteer.report.contrasts): it is a gain only when every interval of P minus a reference
lies above 0 (the unsteered model, a constant answer, the random-feature control, the best prompt, mean-difference
steering); otherwise the sentence names each reference P does not beat ("no better than a random feature at the
same layers"). A gain sentence states P's lowest per-class recall and, when one answer exceeds 70% of answers, that
lean. Then the other rows, on simultaneous intervals: the non-control rows above the unsteered model (and a constant
answer), the controls (never gains) and one sentence for each other row whose metric or accuracy rose.
"""
from __future__ import annotations

from corrsteer.report.contrasts import (
    CONSTANT,
    Contrast,
    P,
    constant_metric,
    draws_summary,
    is_control,
    metric_of,
    p_contrasts,
    secondary,
    secondary_intervals,
)
from corrsteer.report.stats import NO_ANSWER, ClassScore, Evaluation, Interval

LEAN_SHARE = 0.7        # an answer given to more than this share of items is named as the row's lean


def _ci(d: Interval) -> str:
    return f"{d.point:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}]"


def _pct(level: float) -> str:
    return f"{100 * level:.0f}%"


def lean(s: ClassScore) -> str:
    """"answers 'positive' to 85% of items" when one answer exceeds LEAN_SHARE of them, else ""."""
    if not s.answers or s.answers[0][1] <= LEAN_SHARE:
        return ""
    top, share = s.answers[0]
    what = "no answer" if top == NO_ANSWER else repr(top)
    return f"answers {what} to {100 * share:.0f}% of items"


def lowest_recall(ev: Evaluation, s: ClassScore) -> str:
    """"lowest per-class recall: negative 0.58" (tasks with classes), else ""."""
    if not ev.classes or not s.recall:
        return ""
    g = min(s.recall, key=lambda k: (s.recall[k], k))
    return f"lowest per-class recall: {g} {s.recall[g]:.2f}"


def _ref(c: Contrast) -> str:
    return f"{c.words} {c.value:.2f} ({_ci(c.d)})"


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _p_gain(ev: Evaluation, s: ClassScore, cs: list[Contrast]) -> str:
    base = cs[0]
    text = (f"{P} raises {ev.metric} from {base.value:.2f} (unsteered) to {metric_of(ev, s):.2f} ({base.d.point:+.3f}, "
            f"{_pct(ev.level)} bootstrap interval [{base.d.lo:+.3f}, {base.d.hi:+.3f}])")
    text += (f" and beats every reference on the same items: {_and([_ref(c) for c in cs[1:]])}." if cs[1:] else ".")
    tail = "; ".join(x for x in (lowest_recall(ev, s), lean(s)) if x)
    return text + (f" {tail[0].upper()}{tail[1:]}." if tail else "")


def _p_not_gain(ev: Evaluation, s: ClassScore, cs: list[Contrast]) -> str:
    """"P is not a gain: ...; no better than <refs>; worse than <refs>; above <refs>." (each with its interval)."""
    if s.n_changed == 0:
        return f"{P} changed no answer (its answers are the unsteered model's), so it is not a gain."
    kinds = (("no better than", lambda d: not d.above_zero and d.hi >= 0), ("worse than", lambda d: d.hi < 0),
             ("above", lambda d: d.above_zero))
    parts = [f"{words} {_and([_ref(c) for c in cs if test(c.d)])}" for words, test in kinds
             if any(test(c.d) for c in cs)]
    text = f"{P} is not a gain: {ev.metric} {metric_of(ev, s):.2f}; " + "; ".join(parts) + "."
    return text + (f" It {lean(s)}." if lean(s) else "")


def p_sentences(ev: Evaluation) -> list[str]:
    cs = p_contrasts(ev)
    if not cs:
        return [f"No {P} row in this run."]
    s = ev.scores[P]
    lines = [_p_gain(ev, s, cs) if all(c.d.above_zero for c in cs) else _p_not_gain(ev, s, cs)]
    dr = draws_summary(ev)
    if dr is not None:
        lines.append(f"Random-feature control, {dr.n} draws at P's layers: {ev.metric} mean {dr.mean:.2f}, range "
                     f"{dr.lo:.2f}-{dr.hi:.2f}; {P} beats {dr.beaten} of {dr.n} (interval of the difference above "
                     "0).")
    return lines


def is_gain(ev: Evaluation, name: str, sim: dict) -> bool:
    """A row other than P (not a control) whose simultaneous intervals against the unsteered model and, with
    classes, the constant answer lie above 0."""
    if is_control(name):
        return False
    return sim[(name, "baseline")].above_zero and (not ev.classes or sim[(name, CONSTANT)].above_zero)


def _row_gain(ev: Evaluation, name: str, sim: dict) -> str:
    s = ev.scores[name]
    extra = "; ".join(x for x in (lowest_recall(ev, s), lean(s)) if x)
    return f"{name} {metric_of(ev, s):.2f} ({_ci(sim[(name, 'baseline')])}{'; ' + extra if extra else ''})"


def _what_happened(ev: Evaluation, name: str, sim: dict) -> str:
    """One sentence on a row that is not a gain though its metric or accuracy rose."""
    s = ev.scores[name]
    d = sim[(name, "baseline")]
    if ev.classes and not sim[(name, CONSTANT)].above_zero:
        why = f"no better than a constant answer ({constant_metric(ev):.2f})"
    elif not d.above_zero:
        why = f"not clearly above the unsteered model ({_ci(d)}, the simultaneous interval includes 0)"
    else:
        why = "not a gain"
    acc = f" (accuracy {100 * s.acc:.1f}% vs {100 * ev.baseline.acc:.1f}% unsteered)" if ev.classes else ""
    how = lean(s)
    return f"{name}{' ' + how if how else ''}: {ev.metric} {metric_of(ev, s):.2f}, {why}{acc}."


def secondary_sentences(ev: Evaluation) -> list[str]:
    names = secondary(ev)
    if not names:
        return []
    sim = secondary_intervals(ev)
    b = metric_of(ev, ev.baseline)
    refs = "the unsteered model and a constant answer" if ev.classes else "the unsteered model"
    family = f"{_pct(ev.level)} simultaneous intervals over the {len(names)} rows other than {P}"
    gains = [n for n in names if is_gain(ev, n, sim)]
    lines = [f"Other rows above {refs} ({family}): " + ", ".join(_row_gain(ev, n, sim) for n in gains) + "."] \
        if gains else [f"No other row is above {refs} ({family})."]
    controls = [n for n in names if is_control(n)]
    if controls:
        lines.append("Controls, never gains: " + ", ".join(
            f"{n} {metric_of(ev, ev.scores[n]):.2f} ({_ci(sim[(n, 'baseline')])} vs unsteered)" for n in controls)
            + ".")
    rose = [n for n in names if n not in gains and not is_control(n)
            and (metric_of(ev, ev.scores[n]) > b or ev.scores[n].acc > ev.baseline.acc)]
    return lines + [_what_happened(ev, n, sim) for n in rose]


def headline(ev: Evaluation) -> list[str]:
    """P's sentences first, then the other rows'."""
    return p_sentences(ev) + secondary_sentences(ev)
