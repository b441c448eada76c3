"""Stages: selection's measure is balanced accuracy where the task has classes, plain accuracy otherwise; the
ranking a run uses is --ranking resolved for its task."""
from pathlib import Path

import pytest

from corrsteer.config import RunConfig
from corrsteer.pipeline.stages import Context
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
