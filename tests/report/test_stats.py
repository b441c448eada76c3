"""Evaluation statistics: Wilson CI, exact McNemar, side-effect ratio, paired comparison."""
import math
import random
from fractions import Fraction

import numpy as np
import pytest
from fakes import class_rows, paired_rows

from corrsteer.report.stats import (
    Comparison,
    accuracy_ci,
    answer_distribution,
    balanced_accuracy,
    class_recall,
    compare,
    constant_answer,
    constant_answers,
    evaluate,
    mcnemar_exact,
    mcnemar_from_counts,
    side_effect_ratio,
)
from corrsteer.tasks.task import has_classes


# ------------------------------------------------------------------------------------------------ Wilson interval
# Bounds are the roots of (p̂ − p)² = z² p (1 − p) / n, solved by hand (30-digit arithmetic), z = 1.96.
@pytest.mark.parametrize("k, n, lo, hi", [
    (8, 10, 0.490156846720723, 0.943319052019307),
    (0, 10, 0.0, 0.277540168766617),
    (10, 10, 0.722459831233383, 1.0),
    (1, 1, 0.206543291473893, 1.0),
    (3, 7, 0.158216922262627, 0.749545769590974),
])
def test_wilson_hand_values(k, n, lo, hi):
    acc, a, b = accuracy_ci([True] * k + [False] * (n - k))
    assert acc == pytest.approx(k / n, abs=1e-12)
    assert a == pytest.approx(lo, abs=1e-6)
    assert b == pytest.approx(hi, abs=1e-6)
    assert 0.0 <= a <= acc <= b <= 1.0


def test_wilson_empty_and_bounds():
    assert accuracy_ci([]) == (0.0, 0.0, 1.0)
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 300)
        vals = [rng.random() < rng.random() for _ in range(n)]
        acc, lo, hi = accuracy_ci(vals)
        assert 0.0 <= lo <= acc <= hi <= 1.0


def test_wilson_real_valued_rewards():
    acc, lo, hi = accuracy_ci([0.25, 0.75, 1.0, 0.0])
    assert acc == pytest.approx(0.5)
    assert 0.0 <= lo < 0.5 < hi <= 1.0
    # 0/1 floats behave like booleans
    assert accuracy_ci([1.0, 0.0, 1.0]) == accuracy_ci([True, False, True])


def test_wilson_narrows_with_n():
    _, lo1, hi1 = accuracy_ci([True, False] * 10)
    _, lo2, hi2 = accuracy_ci([True, False] * 1000)
    assert hi2 - lo2 < hi1 - lo1


# ------------------------------------------------------------------------------------------------ McNemar
def _pairs(b, c, same_right=3, same_wrong=2):
    base = [True] * b + [False] * c + [True] * same_right + [False] * same_wrong
    steered = [False] * b + [True] * c + [True] * same_right + [False] * same_wrong
    return base, steered


def _brute(b, c):
    n = b + c
    if n == 0:
        return 1.0
    tail = Fraction(sum(math.comb(n, k) for k in range(min(b, c) + 1)), 2 ** n)
    return float(min(Fraction(1), 2 * tail))


@pytest.mark.parametrize("b, c, p", [(0, 5, 0.0625), (5, 0, 0.0625), (1, 9, 0.021484375), (4, 4, 1.0),
                                     (0, 0, 1.0), (0, 1, 1.0), (2, 3, 1.0)])
def test_mcnemar_known_values(b, c, p):
    assert mcnemar_exact(*_pairs(b, c)) == pytest.approx(p, rel=1e-12)
    assert round(mcnemar_exact(*_pairs(1, 9)), 4) == 0.0215


def test_mcnemar_brute_force_and_symmetry():
    for b in range(0, 25):
        for c in range(0, 25):
            p = mcnemar_exact(*_pairs(b, c))
            assert p == pytest.approx(_brute(b, c), rel=1e-12, abs=1e-300)
            assert p == mcnemar_exact(*_pairs(c, b))
            assert 0.0 < p <= 1.0
            if b == c:
                assert p == 1.0


def test_mcnemar_large_counts():
    p = mcnemar_exact(*_pairs(300, 400))
    assert math.isfinite(p) and 0.0 < p < 1.0
    assert p == pytest.approx(_brute(300, 400), rel=1e-9)
    assert p == mcnemar_from_counts(400, 300)
    # the log-space path (n above the exact limit) agrees with exact arithmetic
    p_big = mcnemar_from_counts(2900, 3100)
    assert math.isfinite(p_big) and 0.0 < p_big < 1.0
    assert p_big == pytest.approx(_brute(2900, 3100), rel=1e-9)


def test_mcnemar_float_outcomes_threshold():
    assert mcnemar_exact([0.9] * 5, [0.1] * 5) == pytest.approx(0.0625)
    assert mcnemar_exact([0.6, 0.7], [0.5, 0.99]) == 1.0          # all >= 0.5: no discordant pairs
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])


# ------------------------------------------------------------------------------------------------ side-effect ratio
def test_ser_nothing_changed():
    assert side_effect_ratio(["A", "B"], ["A", "B"], [1, 0], [1, 0]) == 0.0
    assert side_effect_ratio([], [], [], []) == 0.0


def test_ser_all_changes_harmful():
    assert side_effect_ratio(["A", "B", "C"], ["B", "C", "C"], [True, True, False], [False, False, False]) == 1.0


def test_ser_wrong_to_wrong_counts_in_denominator():
    # item 0: right -> wrong (harmful); item 1: wrong -> different wrong; item 2: wrong -> right; item 3: unchanged
    base_pred, steered_pred = ["A", "B", "C", "D"], ["B", "C", "A", "D"]
    base_ok, steered_ok = [True, False, False, True], [False, False, True, True]
    assert side_effect_ratio(base_pred, steered_pred, base_ok, steered_ok) == pytest.approx(1 / 3)


def test_ser_float_rewards_and_lengths():
    assert side_effect_ratio(["x", "y"], ["z", "y"], [0.8, 0.2], [0.3, 0.2]) == 1.0
    with pytest.raises(ValueError):
        side_effect_ratio(["A"], ["A", "B"], [1], [1])


# ------------------------------------------------------------------------------------------------ compare()
def test_compare_basic_counts():
    base = [{"id": 0, "pred": "A", "correct": True}, {"id": 1, "pred": "B", "correct": False},
            {"id": 2, "pred": "C", "correct": False}, {"id": 3, "pred": "A", "correct": True}]
    steered = [{"id": 0, "pred": "B", "correct": False}, {"id": 1, "pred": "A", "correct": True},
               {"id": 2, "pred": "D", "correct": False}, {"id": 3, "pred": "A", "correct": True}]
    c = compare("sae", base, steered)
    assert isinstance(c, Comparison) and c.variant == "sae" and c.n == 4
    assert (c.n_changed, c.n_improved, c.n_worsened) == (3, 1, 1)
    assert c.acc == 0.5 and c.base_acc == 0.5 and c.delta == 0.0
    assert c.p_value == 1.0 and c.ser == pytest.approx(1 / 3)
    assert (c.acc, c.lo, c.hi) == accuracy_ci([0, 1, 0, 1])


def test_compare_order_independent():
    base, steered = paired_rows()
    c1 = compare("v", base, steered)
    rng = random.Random(1)
    b2, s2 = base[:], steered[:]
    rng.shuffle(b2)
    rng.shuffle(s2)
    c2 = compare("v", b2, s2)
    for field in ("n", "acc", "base_acc", "delta", "p_value", "ser", "n_changed", "n_improved", "n_worsened"):
        assert getattr(c1, field) == pytest.approx(getattr(c2, field), abs=1e-12), field
    assert c1.lo == pytest.approx(c2.lo) and c1.hi == pytest.approx(c2.hi)


def test_compare_real_valued_accuracy_is_mean():
    base = [{"id": i, "pred": str(i), "correct": v} for i, v in enumerate([0.2, 0.9, 0.6])]
    steered = [{"id": i, "pred": str(i), "correct": v} for i, v in enumerate([0.7, 0.4, 0.6])]
    c = compare("r", base, steered)
    assert c.acc == pytest.approx(1.7 / 3) and c.base_acc == pytest.approx(1.7 / 3)
    assert (c.n_improved, c.n_worsened, c.n_changed) == (1, 1, 0)


def test_compare_mismatched_ids_raise():
    base, steered = paired_rows(10)
    with pytest.raises(ValueError):
        compare("v", base, steered[:-1])
    with pytest.raises(ValueError):
        compare("v", base, steered[:-1] + [{"id": "other", "pred": "A", "correct": True}])
    with pytest.raises(ValueError):
        compare("v", base, steered + [steered[0]])          # duplicate id


def test_balanced_accuracy_by_hand_constant_answer_and_classes_present():
    def row(gold, pred):
        return dict(gold=gold, pred=pred, correct=float(gold == pred))

    rows = [row("pos", "pos"), row("pos", "pos"), row("pos", "neu"), row("neg", "pos")]
    assert balanced_accuracy(rows) == pytest.approx((2 / 3 + 0) / 2)
    constant = [row("pos", "pos")] * 96 + [row("neg", "pos")] * 96        # the constant answer: 50%, whatever
    assert balanced_accuracy(constant) == pytest.approx(0.5)
    assert balanced_accuracy(constant[:150]) == pytest.approx(0.5)        # ... the class balance
    three = [row(c, "a") for c in "abc"]                                  # recall over the classes present
    assert balanced_accuracy(three) == pytest.approx(1 / 3)
    assert balanced_accuracy([]) == 0.0


# ------------------------------------------------------------------------------- classes: recall, balance, constant
def _r(gold, pred, correct=None):
    return {"id": f"{gold}{pred}{random.random()}", "gold": gold, "pred": pred,
            "correct": float(pred == gold) if correct is None else correct}


def test_balanced_accuracy_by_hand():
    # positive: 3 of 4 right; negative: 1 of 2 right; neutral: none of 1 (no answer read)
    rows = [_r("positive", "positive")] * 3 + [_r("positive", "negative"), _r("negative", "negative"),
                                               _r("negative", "positive"), _r("neutral", "")]
    assert class_recall(rows) == {"negative": 0.5, "neutral": 0.0, "positive": 0.75}
    assert balanced_accuracy(rows) == pytest.approx((0.75 + 0.5 + 0.0) / 3, abs=1e-15)
    assert balanced_accuracy(rows, classes=False) == pytest.approx(4 / 7, abs=1e-15)
    assert balanced_accuracy([]) == 0.0


def test_balanced_accuracy_against_a_float64_reference():
    rng = random.Random(7)
    rows = [_r(rng.choice("ABCD"), "", correct=rng.random()) for _ in range(300)]
    golds = np.array([r["gold"] for r in rows])
    cor = np.array([r["correct"] for r in rows], dtype=np.float64)
    ref = np.mean([cor[golds == g].mean() for g in np.unique(golds)])
    assert balanced_accuracy(rows) == pytest.approx(float(ref), abs=1e-12)


def test_balanced_accuracy_equals_accuracy_when_every_gold_is_distinct():
    rows = [_r(str(i), str(i) if i % 3 else "x") for i in range(30)]
    acc = sum(r["correct"] for r in rows) / len(rows)
    assert balanced_accuracy(rows) == pytest.approx(acc) == balanced_accuracy(rows, classes=False)


def test_has_classes():
    assert [has_classes(k) for k in ("label", "mc", "refusal", "short", "number")] == [True] * 3 + [False] * 2


def test_constant_answer_by_hand():
    rows = [_r("positive", "x")] * 6 + [_r("negative", "x")] * 3 + [_r("neutral", "x")]
    best = constant_answer(rows)
    assert (best.answer, best.acc, best.bacc) == ("positive", 0.6, pytest.approx(1 / 3))
    assert best.recall == {"negative": 0.0, "neutral": 0.0, "positive": 1.0}
    assert [(a.answer, a.acc) for a in constant_answers(rows)] == [("positive", 0.6), ("negative", 0.3),
                                                                   ("neutral", 0.1)]
    free = constant_answer(rows, classes=False)
    assert free.bacc == free.acc == 0.6                 # free-form: balanced accuracy is accuracy


def test_constant_answer_ties_and_empty():
    rows = [_r("b", "x"), _r("a", "x")]
    assert constant_answer(rows).answer == "a"
    assert constant_answer([]).acc == 0.0


def test_answer_distribution():
    rows = [_r("A", "B")] * 5 + [_r("A", "")] * 2 + [_r("A", "A")] * 2 + [_r("A", "C")]
    assert answer_distribution(rows) == [("B", 0.5), ("", 0.2), ("A", 0.2), ("C", 0.1)]


# -------------------------------------------------------------------------------------------- paired bootstrap
def _bootstrap_rows():
    base = class_rows({"p": {"p": 30, "n": 20}, "n": {"n": 10, "p": 40}}, seed=1)
    steered = class_rows({"p": {"p": 35, "n": 15}, "n": {"n": 25, "p": 25}}, seed=2)
    return {"baseline": base, "S": steered}


def test_bootstrap_deterministic_by_seed_and_contains_the_point():
    rows = _bootstrap_rows()
    a, b = evaluate(rows, n_boot=400, seed=5), evaluate(rows, n_boot=400, seed=5)
    c = evaluate(rows, n_boot=400, seed=6)
    assert a == b
    assert a.scores["S"].d_bacc != c.scores["S"].d_bacc
    s = a.scores["S"]
    for iv in (s.d_acc, s.d_bacc, s.vs_constant):
        assert iv.lo <= iv.point <= iv.hi and iv.lo < iv.hi
    assert s.d_acc.point == pytest.approx(compare("S", rows["baseline"], rows["S"]).delta, abs=1e-15)
    assert s.d_bacc.point == pytest.approx(0.6 - 0.4, abs=1e-12)
    assert s.vs_constant.point == pytest.approx(0.6 - 0.5, abs=1e-12)


def test_bootstrap_matches_a_loop_over_the_same_resamples():
    """The vectorised bootstrap against a plain float64 loop over the same resampled indices."""
    rows = _bootstrap_rows()
    n_boot, seed = 300, 11
    ev = evaluate(rows, n_boot=n_boot, seed=seed, level=0.9)
    base, steered = rows["baseline"], {r["id"]: r for r in rows["S"]}
    idx = np.random.default_rng(seed).integers(0, len(base), size=(n_boot, len(base)))
    diffs = []
    for draw in idx:
        b = [base[i] for i in draw]
        s = [steered[r["id"]] for r in b]
        diffs.append(balanced_accuracy(s) - balanced_accuracy(b))
    lo, hi = np.quantile(diffs, [0.05, 0.95])
    assert ev.scores["S"].d_bacc.lo == pytest.approx(min(lo, 0.2), abs=1e-12)
    assert ev.scores["S"].d_bacc.hi == pytest.approx(hi, abs=1e-12)


def test_bootstrap_interval_narrows_with_more_items():
    small = _bootstrap_rows()
    big = {k: [dict(r, id=f"{r['id']}-{j}") for j in range(4) for r in v] for k, v in small.items()}
    w = [ev.scores["S"].d_acc.hi - ev.scores["S"].d_acc.lo for ev in (evaluate(small, n_boot=500),
                                                                      evaluate(big, n_boot=500))]
    assert w[1] < 0.7 * w[0]


def test_evaluate_rejects_unpaired_rows():
    rows = _bootstrap_rows()
    rows["S"] = rows["S"][1:]
    with pytest.raises(ValueError, match="ids differ"):
        evaluate(rows, n_boot=10)
