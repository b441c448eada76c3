"""P's contrasts and the simultaneous intervals: max-T intervals are wider than the marginal ones and cover the
family together; several random-feature draws are averaged per resample; the best prompt's interval takes the
maximum per resample; the Results table's Δ vs P column and the free-form table without a constant-answer row."""
import numpy as np
from fakes import class_rows

from corrsteer.report.contrasts import (
    CONSTANT,
    diff,
    draws_summary,
    p_contrasts,
    point,
    secondary_intervals,
    simultaneous,
    vs_p,
)
from corrsteer.report.headline import headline
from corrsteer.report.results import fmt_diff_ci, results_table
from corrsteer.report.stats import compare, evaluate

P = "CorrSteer-P"
BASE = {"a": {"a": 50, "b": 50}, "b": {"b": 40, "a": 60}}


def _rows(k: int, seed: int):
    """a variant right on k of each class's 100 items."""
    return class_rows({"a": {"a": k, "b": 100 - k}, "b": {"b": k, "a": 100 - k}}, seed=seed)


def test_max_t_intervals_are_wider_than_marginal_ones():
    rows = {"baseline": class_rows(BASE, 1)} | {f"v{i}": _rows(45 + 3 * i, 10 + i) for i in range(6)}
    ev = evaluate(rows, n_boot=2000, seed=4)
    sim = secondary_intervals(ev)
    assert len(sim) == 12                                        # 6 rows x (unsteered, constant)
    for i in range(6):
        m, s = ev.scores[f"v{i}"].d_bacc, sim[(f"v{i}", "baseline")]
        assert s.point == m.point and s.hi - s.lo > 1.15 * (m.hi - m.lo), i
        assert s.lo < m.lo and s.hi > m.hi


def test_max_t_covers_the_family_together():
    """Six null rows (every row is the baseline's own distribution, reshuffled): the fraction of resampled datasets
    in which ANY simultaneous interval misses the truth stays near 5%; marginal intervals miss far more often."""
    rng = np.random.default_rng(0)
    miss_sim = miss_marg = 0
    trials = 60
    for t in range(trials):
        y = {n: rng.random(120) < 0.5 for n in ("baseline", *[f"v{i}" for i in range(6)])}
        rows = {n: [{"id": i, "gold": "x" if i % 2 else "y", "pred": "p", "correct": float(v[i])}
                    for i in range(120)] for n, v in y.items()}
        ev = evaluate(rows, n_boot=400, seed=t)
        sim = simultaneous(ev, [(f"v{i}", "baseline") for i in range(6)])
        miss_sim += any(s.lo > 0 or s.hi < 0 for s in sim.values())
        miss_marg += any(ev.scores[f"v{i}"].d_bacc.lo > 0 or ev.scores[f"v{i}"].d_bacc.hi < 0 for i in range(6))
    assert miss_sim <= 0.15 * trials and miss_marg > miss_sim


def test_a_constant_difference_keeps_its_point():
    base = class_rows(BASE, 1)
    ev = evaluate({"baseline": base, "same": base, "v": _rows(60, 2)}, n_boot=300)
    sim = simultaneous(ev, [("same", "baseline"), ("v", "baseline")])
    same = sim[("same", "baseline")]
    assert (same.point, same.lo, same.hi) == (0.0, 0.0, 0.0)


def test_several_random_draws_are_averaged_per_resample():
    draws = {f"control-random-feature-{k}": _rows(45 + 5 * k, 20 + k) for k in range(1, 6)}
    rows = {"baseline": class_rows(BASE, 1), P: _rows(62, 2)} | draws
    ev = evaluate(rows, n_boot=1000, seed=0)
    c = {x.key: x for x in p_contrasts(ev)}["random-feature"]
    mean = np.mean([point(ev, n) for n in draws])
    assert abs(c.value - mean) < 1e-12 and abs(c.d.point - (point(ev, P) - mean)) < 1e-12
    samples = ev.boot[P] - np.mean([ev.boot[n] for n in draws], axis=0)
    assert abs(c.d.lo - np.quantile(samples, 0.025)) < 1e-12
    dr = draws_summary(ev)
    beaten = sum(diff(ev, P, n).above_zero for n in draws)
    assert (dr.n, dr.beaten) == (5, beaten) and 0 < beaten < 5
    assert dr.lo == min(point(ev, n) for n in draws) and dr.hi == max(point(ev, n) for n in draws)
    text = " ".join(headline(ev))
    assert "random features at the same layers (mean of 5 draws)" in text
    assert f"Random-feature control, 5 draws at P's layers: balanced accuracy mean {dr.mean:.2f}" in text
    assert f"{P} beats {beaten} of 5" in text
    table = "\n".join(results_table([compare(n, rows["baseline"], rows[n]) for n in draws], ev))
    assert "| random features (mean of 5 draws; range " in table


def test_best_prompt_interval_takes_the_maximum_per_resample():
    rows = {"baseline": class_rows(BASE, 1), P: _rows(62, 2), "prompting": _rows(58, 3), "few-shot": _rows(57, 4),
            "prompting+P": _rows(90, 5)}
    ev = evaluate(rows, n_boot=1000, seed=0)
    c = {x.key: x for x in p_contrasts(ev)}["prompt"]
    assert c.words == "the best prompt (prompting)"                # prompting+P is steered: not a prompt
    samples = ev.boot[P] - np.maximum(ev.boot["prompting"], ev.boot["few-shot"])
    assert abs(c.d.lo - min(np.quantile(samples, 0.025), c.d.point)) < 1e-12
    assert c.d.lo < diff(ev, P, "prompting").lo                     # the choice is inside the interval


def test_delta_vs_p_column_on_every_row():
    rows = {"baseline": class_rows(BASE, 1), P: _rows(62, 2), "mean-difference": _rows(55, 3)}
    ev = evaluate(rows, n_boot=500, seed=0)
    comps = [compare(n, rows["baseline"], rows[n]) for n in (P, "mean-difference")]
    table = results_table(comps, ev, {"mean-difference": 0.5}, references=True)
    assert "Δ vs P [bootstrap]" in table[0] and "McNemar p (accuracy)" in table[0]
    d = vs_p(ev)
    assert fmt_diff_ci(d["baseline"]) in table[2] and fmt_diff_ci(d[CONSTANT]) in table[3]
    assert fmt_diff_ci(d["mean-difference"]) in table[5] and table[4].split(" | ")[6] == "—"


def test_free_form_has_no_constant_row():
    base = [{"id": i, "gold": str(i % 7), "pred": str(i % 3), "correct": float(i % 7 == i % 3)} for i in range(60)]
    ev = evaluate({"baseline": base, P: base[::-1][::-1]}, classes=False, n_boot=100)
    table = results_table([compare(P, base, base)], ev, references=True)
    assert table[2].startswith("| unsteered (baseline) |") and not any("constant answer" in x for x in table)
    assert [c.key for c in p_contrasts(ev)] == ["unsteered"]
    assert all(r != CONSTANT for _, r in secondary_intervals(ev))
