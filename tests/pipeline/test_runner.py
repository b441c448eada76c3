"""The stage runner's Context: selection's measure is balanced accuracy where the task has classes, plain accuracy
otherwise; the ranking a run uses is --ranking resolved once for its task."""
from pathlib import Path

import pytest

from corrsteer.config import RunConfig
from corrsteer.pipeline.runner import Context
from corrsteer.tasks.task import Task

# 3 positives answered right, 1 negative answered wrong: accuracy 0.75, balanced accuracy 0.5
ROWS = [dict(gold="positive", pred="positive", correct=1.0)] * 3 + [dict(gold="negative", pred="positive",
                                                                        correct=0.0)]


def _ctx(kind, ranking="auto"):
    task = Task(name="t", kind=kind, items=[], max_new_tokens=8)
    return Context(lm=None, bank=None, task=task, cfg=RunConfig(ranking=ranking),
                   out=Path("."))


def test_measure_is_balanced_where_the_task_has_classes():
    assert _ctx("label").measure(ROWS) == pytest.approx(0.5)
    assert _ctx("short").measure(ROWS) == pytest.approx(0.75)


def test_context_ranking_resolves_auto():
    assert _ctx("mc").ranking == "within-class" and _ctx("short").ranking == "pearson"
    assert _ctx("mc", "pearson").ranking == "pearson"


def test_no_candidates_names_the_real_cause():
    """Every positive right, every negative wrong: both outcomes exist, yet within-class ranking has nothing to rank
    because the class predicts correctness; all wrong is the other message."""
    from corrsteer.method.rank import no_candidates_message
    rows = [{"gold": "positive", "correct": 1.0}] * 4 + [{"gold": "negative", "correct": 0.0}] * 4
    msg = no_candidates_message(rows, "within-class")
    assert "correctness is fully predicted by the class (every item of each class: negative wrong, positive right; " \
           "8 samples)" in msg and "expected both right and wrong" not in msg and "\n" not in msg
    assert "expected both right and wrong answers" in no_candidates_message(rows, "pearson")
    wrong = [dict(r, correct=0.0) for r in rows]
    assert "(accuracy 0.00 over 8 samples), expected both" in no_candidates_message(wrong, "within-class")
    mixed = rows + [{"gold": "negative", "correct": 1.0}]
    assert "fully predicted" not in no_candidates_message(mixed, "within-class")
