"""CorrSteer-P against its references, and every other row with simultaneous intervals, on the shared resamples of
an Evaluation (corrsteer.report.stats.evaluate).

P is the primary comparison. Its contrasts, each a paired-bootstrap percentile interval of P's headline metric minus
the reference's: the unsteered model, the best constant answer (tasks with classes only), the random-feature control
(with several draws: their mean on each resample), the better of the prompting rows `prompting` and `few-shot` (the
maximum on each resample, so choosing the better prompt on the test items is inside the interval; `prompting+P` is
steered and not a prompt) and mean-difference steering. P is a gain only when every interval lies above 0 (an
intersection-union test: each at the marginal level).

Every other row gets simultaneous intervals of its difference from the unsteered model (and from the constant
answer where the task has classes): max-T over the shared resamples, d ± c · se with c the `level` quantile of the
largest standardised deviation over the whole family, so the family's coverage is `level` together.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from corrsteer.report.stats import CONSTANT, ClassScore, Evaluation, Interval, bootstrap_interval

P = "CorrSteer-P"
BASELINE = "baseline"
MEAN_DIFFERENCE = "mean-difference"
RANDOM_FEATURE = "control-random-feature"      # one draw; several are control-random-feature-1 ... -R
PROMPTS = ("prompting", "few-shot")             # the prompts P is compared with
STEERED_PROMPT = "prompting+P"
CONTROL = "control-"                            # a control's name starts with this: never a gain


def metric_of(ev: Evaluation, s: ClassScore) -> float:
    return s.bacc if ev.classes else s.acc


def constant_metric(ev: Evaluation) -> float:
    return ev.constant.bacc if ev.classes else ev.constant.acc


def point(ev: Evaluation, name: str) -> float:
    """The headline metric of a row: a variant, "baseline" or CONSTANT."""
    if name == BASELINE:
        return metric_of(ev, ev.baseline)
    if name == CONSTANT:
        return constant_metric(ev)
    return metric_of(ev, ev.scores[name])


def diff(ev: Evaluation, a: str, b: str) -> Interval:
    """a's headline metric minus b's, with its paired-bootstrap interval."""
    return bootstrap_interval(point(ev, a) - point(ev, b), ev.boot[a] - ev.boot[b], ev.level)


def is_control(name: str) -> bool:
    return name.startswith(CONTROL)


def random_draws(names) -> list[str]:
    """The random-feature control's rows: the one `control-random-feature`, or `control-random-feature-<k>`."""
    return [n for n in names if n == RANDOM_FEATURE or re.fullmatch(re.escape(RANDOM_FEATURE) + r"-\d+", n)]


@dataclass
class Contrast:
    """P minus one reference: what the reference is in words, its metric, and the interval of the difference."""
    key: str          # unsteered | constant | random-feature | prompt | mean-difference
    words: str        # "a random feature at the same layers"
    value: float      # the reference's headline metric
    d: Interval       # P - reference


def _random_contrast(ev: Evaluation, draws: list[str]) -> Contrast:
    words = "a random feature at the same layers" if len(draws) == 1 else \
        f"random features at the same layers (mean of {len(draws)} draws)"
    value = float(np.mean([point(ev, n) for n in draws]))
    samples = ev.boot[P] - np.mean([ev.boot[n] for n in draws], axis=0)
    return Contrast("random-feature", words, value, bootstrap_interval(point(ev, P) - value, samples, ev.level))


def _prompt_contrast(ev: Evaluation, prompts: list[str]) -> Contrast:
    best = max(prompts, key=lambda n: (point(ev, n), -prompts.index(n)))
    samples = ev.boot[P] - np.max([ev.boot[n] for n in prompts], axis=0)
    words = f"the best prompt ({best})" if len(prompts) > 1 else f"the prompt ({best})"
    d = bootstrap_interval(point(ev, P) - point(ev, best), samples, ev.level)
    return Contrast("prompt", words, point(ev, best), d)


def p_contrasts(ev: Evaluation) -> list[Contrast]:
    """P against each reference the run has, in a fixed order; [] when the run has no P row."""
    if P not in ev.scores:
        return []
    out = [Contrast("unsteered", "the unsteered model", point(ev, BASELINE), diff(ev, P, BASELINE))]
    if ev.classes:
        out.append(Contrast("constant", "a constant answer", constant_metric(ev), diff(ev, P, CONSTANT)))
    draws = random_draws(ev.scores)
    if draws:
        out.append(_random_contrast(ev, draws))
    prompts = [n for n in PROMPTS if n in ev.scores]
    if prompts:
        out.append(_prompt_contrast(ev, prompts))
    if MEAN_DIFFERENCE in ev.scores:
        out.append(Contrast("mean-difference", "mean-difference steering", point(ev, MEAN_DIFFERENCE),
                            diff(ev, P, MEAN_DIFFERENCE)))
    return out


@dataclass
class Draws:
    """Several random-feature draws: their metrics' mean and range, and how many P beats (interval above 0)."""
    n: int
    mean: float
    lo: float
    hi: float
    beaten: int


def draws_summary(ev: Evaluation) -> Draws | None:
    draws = random_draws(ev.scores)
    if len(draws) < 2:
        return None
    vals = [point(ev, n) for n in draws]
    beaten = sum(diff(ev, P, n).above_zero for n in draws) if P in ev.scores else 0
    return Draws(len(draws), float(np.mean(vals)), min(vals), max(vals), beaten)


def secondary(ev: Evaluation) -> list[str]:
    """Every row but P."""
    return [n for n in ev.scores if n != P]


def simultaneous(ev: Evaluation, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], Interval]:
    """{(a, b): a - b} with max-T simultaneous intervals over the family `pairs` (coverage ev.level together);
    a difference that never varies over the resamples keeps its point as its interval and sets no bound."""
    if not pairs:
        return {}
    d = np.array([point(ev, a) - point(ev, b) for a, b in pairs])
    samples = np.array([ev.boot[a] - ev.boot[b] for a, b in pairs])
    se = samples.std(axis=1)
    varies = se > 1e-12
    c = 0.0
    if varies.any():
        t = np.abs(samples[varies] - d[varies, None]) / se[varies, None]
        c = float(np.quantile(t.max(axis=0), ev.level))
    return {pair: Interval(float(d[j]), float(d[j] - c * se[j]), float(d[j] + c * se[j]))
            for j, pair in enumerate(pairs)}


def secondary_intervals(ev: Evaluation) -> dict[tuple[str, str], Interval]:
    """The simultaneous family of every row but P: against the unsteered model and, with classes, the constant."""
    refs = (BASELINE, CONSTANT) if ev.classes else (BASELINE,)
    return simultaneous(ev, [(n, r) for n in secondary(ev) for r in refs])


def vs_p(ev: Evaluation) -> dict[str, Interval]:
    """{row: its metric minus P's} for every row (the unsteered model and, with classes, the constant answer too)."""
    if P not in ev.scores:
        return {}
    names = [BASELINE] + ([CONSTANT] if ev.classes else []) + [n for n in ev.scores if n != P]
    return {n: diff(ev, n, P) for n in names}
