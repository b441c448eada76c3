"""The headline cannot be fooled by a constant answer: a variant that answers one class to most items, with an
accuracy gain over a baseline that favours another class, is not called a gain; a genuine balanced gain is."""
from fakes import class_rows

from corrsteer.report.headline import headline, is_gain
from corrsteer.report.stats import evaluate

# 100 positive / 100 negative items; the unsteered model says "neutral" to most negatives (the run)
BASE = {"positive": {"positive": 59, "neutral": 41}, "negative": {"negative": 5, "neutral": 90, "positive": 5}}
# answers "positive" to 170 of 200 items (85%): accuracy 50.5%, balanced accuracy 0.505, a constant answer 0.50
COLLAPSED = {"positive": {"positive": 97, "neutral": 3}, "negative": {"positive": 73, "negative": 4, "neutral": 23}}
# a genuine balanced gain: recall 0.80 / 0.75
BALANCED = {"positive": {"positive": 80, "neutral": 20}, "negative": {"negative": 75, "positive": 20, "neutral": 5}}


def _ev(classes=True, **variants):
    rows = {"baseline": class_rows(BASE, seed=1)}
    rows |= {name: class_rows(counts, seed=2 + i) for i, (name, counts) in enumerate(variants.items())}
    return evaluate(rows, classes=classes, n_boot=1000, seed=0)


def test_collapse_onto_one_class_is_not_called_a_gain():
    ev = _ev(P=COLLAPSED)
    p = ev.scores["P"]
    assert p.acc - ev.baseline.acc > 0.15 and p.d_acc.above_zero        # the accuracy gain that fooled the report
    assert p.d_bacc.above_zero                                            # above the unsteered model, too
    assert not is_gain(ev, p)                                             # ... but not above a constant answer
    text = " ".join(headline(ev))
    assert "raises" not in text
    assert "No variant beats both the unsteered model" in text
    assert "P answers 'positive' to 85% of items" in text
    assert "balanced accuracy 0.51, no better than a constant answer (0.50)" in text


def test_genuine_balanced_gain_is_named():
    ev = _ev(A=BALANCED, P=COLLAPSED)
    assert is_gain(ev, ev.scores["A"]) and not is_gain(ev, ev.scores["P"])
    lines = headline(ev)
    assert lines[0].startswith("A raises balanced accuracy from 0.32 (unsteered) to 0.78 (+0.46")
    assert "above a constant answer (0.50)" in lines[0]
    assert any(line.startswith("P answers 'positive' to 85% of items") for line in lines[1:])


def test_mc_letter_collapse():
    """A model that prefers 'A' unsteered; steering makes it answer 'B' to 80% of items: letters are classes too."""
    letters = "ABCD"
    base = {g: {"A": 20, g: 5} if g != "A" else {"A": 25} for g in letters}
    steered = {g: ({"B": 20, g: 5} if g != "B" else {"B": 25}) for g in letters}
    steered["C"] = {"B": 15, "C": 10}
    rows = {"baseline": class_rows(base, 1), "S": class_rows(steered, 2)}
    ev = evaluate(rows, classes=True, n_boot=1000, seed=0)
    s = ev.scores["S"]
    assert s.acc > ev.baseline.acc and s.d_acc.point > 0
    assert ev.constant.bacc == 0.25
    text = " ".join(headline(ev))
    assert "raises" not in text and "S answers 'B' to 80% of items" in text


def test_no_variant_beats_the_unsteered_model():
    ev = _ev(S=BASE)
    assert headline(ev) == ["No variant beats the unsteered model (balanced accuracy 0.32)."]


def test_interval_including_zero_is_not_a_gain():
    """A small rise above both references, within the bootstrap's noise."""
    near = {"positive": {"positive": 72, "neutral": 28}, "negative": {"negative": 54, "neutral": 46}}
    base = {"positive": {"positive": 70, "neutral": 30}, "negative": {"negative": 50, "neutral": 50}}
    rows = {"baseline": class_rows(base, 1), "S": class_rows(near, 2)}
    ev = evaluate(rows, classes=True, n_boot=1000, seed=0)
    assert ev.scores["S"].vs_constant.above_zero and not ev.scores["S"].d_bacc.above_zero
    text = " ".join(headline(ev))
    assert "raises" not in text and "not clearly above the unsteered model" in text and "includes 0" in text


def test_free_form_uses_accuracy():
    """Every gold distinct: the metric is accuracy, the constant answer is the most frequent gold."""
    base = [{"id": i, "gold": str(i), "pred": str(i) if i < 30 else "x", "correct": float(i < 30)} for i in range(100)]
    good = [{"id": i, "gold": str(i), "pred": str(i) if i < 60 else "x", "correct": float(i < 60)} for i in range(100)]
    ev = evaluate({"baseline": base, "S": good}, classes=False, n_boot=500, seed=3)
    assert ev.metric == "accuracy" and ev.constant.acc == 0.01
    assert headline(ev)[0].startswith("S raises accuracy from 0.30 (unsteered) to 0.60 (+0.30")


def test_prompt_against_steering_sentence():
    ev = _ev(A=BALANCED, prompting=COLLAPSED)
    last = headline(ev, steering=["A"], prompting=["prompting"])[-1]
    assert last.startswith("Steering does better than prompting: A 0.78 vs the best prompt prompting 0.51")
    ev = _ev(S=COLLAPSED, **{"few-shot": BALANCED})
    last = headline(ev, steering=["S"], prompting=["few-shot"])[-1]
    assert last.startswith("A prompt does at least as well as steering: few-shot 0.78")
    ev = _ev(S=COLLAPSED, prompting=COLLAPSED)                       # neither beats the constant answer
    last = headline(ev, steering=["S"], prompting=["prompting"])[-1]
    assert last.startswith("Neither steering nor a prompt gains here: the best steering variant S 0.51")
