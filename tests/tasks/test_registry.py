"""The task registries: built-in tasks (register_task) and hub tasks (register_hub_task); a name is registered once."""
import pytest

import corrsteer.tasks.task as task_module
from corrsteer.tasks.hub import HUB_TASKS, register_hub_task
from corrsteer.tasks.task import Item, Task, get_task, list_tasks, register_task


@pytest.fixture
def task_registry(monkeypatch):
    """The built-in task registry; tasks a test registers are gone after it (other tests list every task)."""
    monkeypatch.setattr(task_module, "TASK_REGISTRY", dict(task_module.TASK_REGISTRY))


def test_register_task(task_registry):
    @register_task("tiny-test-task")
    def _tiny(seed):
        return Task("tiny-test-task", "short", [Item(f"t-{seed}", "What is 1 + 1?", "2", "short")], 8)

    assert "tiny-test-task" in list_tasks()
    assert get_task("tiny-test-task", seed=5).items[0].id == "t-5"


def test_a_builtin_task_name_is_registered_once(task_registry):
    def factory(seed):
        return Task("dup-test-task", "short", [Item("d", "What is 1 + 1?", "2", "short")], 8)

    with pytest.raises(ValueError, match="task 'sentiment' is already registered"):
        register_task("sentiment")(factory)
    assert get_task("sentiment").kind == "label"                     # the first registration stands
    register_task("dup-test-task")(factory)
    with pytest.raises(ValueError, match="task 'dup-test-task' is already registered"):
        register_task("dup-test-task")(lambda seed: None)
    assert get_task("dup-test-task").items[0].id == "d"


def test_a_hub_task_name_is_registered_once():
    spec = HUB_TASKS["mmlu"]
    with pytest.raises(ValueError, match="hub task 'mmlu' is already registered"):
        register_hub_task(spec)
    assert HUB_TASKS["mmlu"] is spec
