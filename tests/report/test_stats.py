"""Evaluation statistics: Wilson CI, exact McNemar, side-effect ratio, paired comparison."""
import math
import random
from fractions import Fraction

import pytest
from fakes import paired_rows

from corrsteer.report.stats import (
    Comparison,
    accuracy_ci,
    balanced_accuracy,
    compare,
    mcnemar_exact,
    mcnemar_from_counts,
    side_effect_ratio,
)


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


def test_balanced_accuracy_by_hand():
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
