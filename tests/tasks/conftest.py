"""Fixtures of the task tests."""
import pytest

import corrsteer.tasks.task as task_module


@pytest.fixture
def task_registry(monkeypatch):
    """The built-in task registry as it is; tasks a test registers are gone after it (other tests list every task)."""
    monkeypatch.setattr(task_module, "TASK_REGISTRY", dict(task_module.TASK_REGISTRY))
    return task_module.TASK_REGISTRY
