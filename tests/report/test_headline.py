"""The headline cannot overclaim: CorrSteer-P is a gain only above every reference (the unsteered model, a constant
answer, the random-feature control, the best prompt, mean-difference steering), each interval above 0; a planted P
that equals a random direction, or ties few-shot, is reported as such; a control is never a gain; a variant that
answers one class to most items is not called a gain."""
from fakes import class_rows

from corrsteer.report.headline import headline
from corrsteer.report.stats import evaluate

P = "CorrSteer-P"
# 100 positive / 100 negative items; the unsteered model says "neutral" to most negatives (the run)
BASE = {"positive": {"positive": 59, "neutral": 41}, "negative": {"negative": 5, "neutral": 90, "positive": 5}}
# answers "positive" to 170 of 200 items (85%): accuracy 50.5%, balanced accuracy 0.505, a constant answer 0.50
COLLAPSED = {"positive": {"positive": 97, "neutral": 3}, "negative": {"positive": 73, "negative": 4, "neutral": 23}}
# a genuine balanced gain: recall 0.80 / 0.75
BALANCED = {"positive": {"positive": 80, "neutral": 20}, "negative": {"negative": 75, "positive": 20, "neutral": 5}}
# a smaller balanced rise: recall 0.70 / 0.55
MILD = {"positive": {"positive": 70, "neutral": 30}, "negative": {"negative": 55, "neutral": 45}}


def _ev(classes=True, **variants):
    rows = {"baseline": class_rows(BASE, seed=1)}
    rows |= {name.replace("_", "-"): class_rows(counts, seed=2 + i)
             for i, (name, counts) in enumerate(variants.items())}
    return evaluate(rows, classes=classes, n_boot=1000, seed=0)


def _p(**variants):
    return _ev(**{P: variants.pop("p")}, **variants)


def test_p_above_every_reference_is_a_gain_with_its_lowest_recall():
    ev = _p(p=BALANCED, control_random_feature=MILD, few_shot=MILD, mean_difference=BASE)
    first = headline(ev)[0]
    assert first.startswith(f"{P} raises balanced accuracy from 0.32 (unsteered) to 0.78 (+0.4")
    for ref in ("a constant answer 0.50", "a random feature at the same layers 0.62", "the prompt (few-shot) 0.62",
                "mean-difference steering 0.32"):
        assert ref in first, ref
    assert "Lowest per-class recall: negative 0.75." in first


def test_p_that_equals_a_random_direction_is_no_better_than_a_random_feature():
    """The planted case: P's answers are the random-feature control's, both far above the unsteered model."""
    same = class_rows(BALANCED, seed=5)
    ev = evaluate({"baseline": class_rows(BASE, seed=1), P: same, "control-random-feature": same}, n_boot=1000)
    first = headline(ev)[0]
    assert ev.scores[P].d_bacc.above_zero and ev.scores[P].vs_constant.above_zero
    assert "raises" not in first and first.startswith(f"{P} is not a gain")
    assert "no better than a random feature at the same layers 0.78 (+0.000 [+0.000, +0.000])" in first


def test_a_tie_with_few_shot_is_not_a_win():
    same = class_rows(BALANCED, seed=5)
    ev = evaluate({"baseline": class_rows(BASE, seed=1), P: same, "few-shot": same,
                   "prompting": class_rows(COLLAPSED, seed=6)}, n_boot=1000)
    first = headline(ev)[0]
    assert "raises" not in first and "beats" not in first
    assert "no better than the best prompt (few-shot) 0.78" in first


def test_a_control_with_a_large_gain_is_never_called_a_gain():
    ev = _p(p=MILD, control_shuffled_outcome=BALANCED, mean_difference=BALANCED)
    text = " ".join(headline(ev))
    assert "Other rows above the unsteered model and a constant answer" in text
    gains = text.split("Other rows above")[1].split("). ")[0]
    assert "mean-difference 0.78" in gains and "control-shuffled-outcome" not in gains
    assert "Controls, never gains: control-shuffled-outcome 0.78 (+0.4" in text


def test_collapse_onto_one_class_is_not_called_a_gain():
    ev = _p(p=COLLAPSED)
    s = ev.scores[P]
    assert s.acc - ev.baseline.acc > 0.15 and s.d_acc.above_zero and s.d_bacc.above_zero
    first = headline(ev)[0]
    assert first.startswith(f"{P} is not a gain: balanced accuracy 0.51; no better than a constant answer 0.50")
    assert "above the unsteered model 0.32" in first and first.endswith("It answers 'positive' to 85% of items.")


def test_a_gain_states_its_lean_above_70_percent():
    lean = {"positive": {"positive": 100}, "negative": {"negative": 60, "positive": 40}}     # 'positive' 70%+
    ev = _p(p=lean)
    first = headline(ev)[0]
    assert first.startswith(f"{P} raises") and first.endswith("Lowest per-class recall: negative 0.60.")   # 70%
    ev = _p(p={"positive": {"positive": 100}, "negative": {"negative": 58, "positive": 42}})
    assert headline(ev)[0].endswith("Lowest per-class recall: negative 0.58; answers 'positive' to 71% of items.")


def test_mc_letter_collapse():
    """A model that prefers 'A' unsteered; steering makes it answer 'B' to 80% of items: letters are classes too."""
    letters = "ABCD"
    base = {g: {"A": 20, g: 5} if g != "A" else {"A": 25} for g in letters}
    steered = {g: ({"B": 20, g: 5} if g != "B" else {"B": 25}) for g in letters}
    steered["C"] = {"B": 15, "C": 10}
    rows = {"baseline": class_rows(base, 1), P: class_rows(steered, 2)}
    ev = evaluate(rows, classes=True, n_boot=1000, seed=0)
    assert ev.scores[P].acc > ev.baseline.acc and ev.constant.bacc == 0.25
    first = headline(ev)[0]
    assert "raises" not in first and first.endswith("It answers 'B' to 80% of items.")


def test_p_that_changed_nothing():
    base = class_rows(BASE, seed=1)
    ev = evaluate({"baseline": base, P: base}, n_boot=100)
    assert headline(ev)[0] == f"{P} changed no answer (its answers are the unsteered model's), so it is not a gain."


def test_without_p():
    ev = _ev(S=BASE)
    assert headline(ev)[:2] == [f"No {P} row in this run.", "No other row is above the unsteered model and a "
                                "constant answer (95% simultaneous intervals over the 1 rows other than CorrSteer-P)."]


def test_interval_including_zero_is_not_a_gain():
    """A small rise above both references, within the bootstrap's noise."""
    near = {"positive": {"positive": 72, "neutral": 28}, "negative": {"negative": 54, "neutral": 46}}
    base = {"positive": {"positive": 70, "neutral": 30}, "negative": {"negative": 50, "neutral": 50}}
    rows = {"baseline": class_rows(base, 1), P: class_rows(near, 2), "S": class_rows(near, 3)}
    ev = evaluate(rows, classes=True, n_boot=1000, seed=0)
    lines = headline(ev)
    assert lines[0].startswith(f"{P} is not a gain: balanced accuracy 0.63; no better than the unsteered model 0.60")
    assert any("S: balanced accuracy 0.63, not clearly above the unsteered model" in x and "includes 0" in x
               for x in lines)


def test_free_form_uses_accuracy_and_no_constant_answer():
    """Every gold distinct: the metric is accuracy, and no constant answer is a reference."""
    base = [{"id": i, "gold": str(i), "pred": str(i) if i < 30 else "x", "correct": float(i < 30)} for i in range(100)]
    good = [{"id": i, "gold": str(i), "pred": str(i) if i < 60 else "x", "correct": float(i < 60)} for i in range(100)]
    ev = evaluate({"baseline": base, P: good, "S": good}, classes=False, n_boot=500, seed=3)
    lines = headline(ev)
    assert ev.metric == "accuracy"
    assert lines[0].startswith(f"{P} raises accuracy from 0.30 (unsteered) to 0.60 (+0.300")
    assert lines[0].endswith("]).")
    assert lines[1].startswith("Other rows above the unsteered model (95% simultaneous") and "S 0.60" in lines[1]
    assert "constant" not in " ".join(lines)
