"""load_task / check_split: the task the settings name, and every bad input as one exact SettingsError line."""
import re

import pytest
from hub_fixtures import write_fixture

import corrsteer.tasks.task as task_module
from corrsteer.config import EvalConfig, RunConfig
from corrsteer.settings import SettingsError
from corrsteer.tasks.hub import hub_task_names
from corrsteer.tasks.load import check_split, load_task
from corrsteer.tasks.task import Item, Task, list_tasks, register_task


@pytest.fixture
def task_registry(monkeypatch):
    """The built-in task registry; tasks a test registers are gone after it (other tests list every task)."""
    monkeypatch.setattr(task_module, "TASK_REGISTRY", dict(task_module.TASK_REGISTRY))

HUBS = ", ".join(hub_task_names())
GOOD = '{"prompt": "Capital of France?", "answer": "Paris"}\n' * 30


def _fails(cfg, message):
    with pytest.raises(SettingsError, match="^" + re.escape(message) + "$"):
        load_task(cfg)


def _file(tmp_path, text, encoding="utf-8", name="t.jsonl"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return str(p)


def test_builtin_file_and_hub_tasks_load(tmp_path):
    assert load_task(RunConfig(task="capitals", seed=2)).items[0].id == \
        load_task(RunConfig(task="capitals", seed=2)).items[0].id
    assert load_task(RunConfig(task="sentiment")).protocol is None
    path = _file(tmp_path, GOOD)
    assert len(load_task(RunConfig(task_file=path)).items) == 30
    assert load_task(RunConfig(task=path)).name == "t"
    hub = load_task(RunConfig(task="xstest", task_path=str(write_fixture(tmp_path, "xstest")), protocol="paper",
                              scorer_models="builtin"))
    assert hub.protocol == "paper" and hub.hub_id == "walledai/XSTest" and hub.max_new_tokens == 32
    amb = load_task(EvalConfig(plan="p.json", task="bbq", bbq_condition="ambig", scorer_models="builtin",
                               task_path=str(write_fixture(tmp_path, "bbq"))))
    assert amb.name == "bbq-ambig"


def test_unknown_task_name():
    _fails(EvalConfig(plan="p.json", task="x"),
           f"--task must be one of {', '.join(list_tasks() + hub_task_names())} (or a .jsonl file), got 'x'")
    assert "arithmetic, capitals" in ", ".join(list_tasks())


def test_hub_options_apply_to_hub_tasks_only():
    _fails(RunConfig(task="sentiment", task_path="x"),
           f"--task-path applies to the hub tasks ({HUBS}), not 'sentiment'")
    _fails(RunConfig(task="sentiment", constrain=True),
           f"--constrain applies to the hub tasks ({HUBS}), not 'sentiment'")
    _fails(RunConfig(task="sentiment", bbq_condition="ambig"),
           f"--bbq-condition applies to the hub tasks ({HUBS}), not 'sentiment'")
    _fails(RunConfig(task="capitals", protocol="paper"), f"--protocol paper applies to the hub tasks ({HUBS}), not "
                                                         "'capitals'")
    _fails(RunConfig(task="mmlu", task_file="t.jsonl", task_path="x"),
           f"--task-path applies to the hub tasks ({HUBS}), not 'mmlu'")
    _fails(RunConfig(task="mmlu", bbq_condition="ambig"), "--bbq-condition applies to --task bbq, not 'mmlu'")
    _fails(RunConfig(task="gsm8k", constrain=True), "--constrain applies to multiple-choice tasks, not gsm8k")


def test_bad_task_files(tmp_path):
    missing = str(tmp_path / "none.jsonl")
    _fails(RunConfig(task_file=missing), f"--task-file {missing}: no such file, expected a JSONL task file")
    _fails(RunConfig(task=missing), f"--task {missing}: no such file, expected a JSONL task file")
    latin = _file(tmp_path, GOOD + '{"prompt": "café", "answer": "x"}\n', "latin-1")
    _fails(RunConfig(task_file=latin), f"--task-file {latin}: line 31 is not UTF-8 (byte 0xe9), expected a UTF-8 "
                                       "JSONL file")
    empty = _file(tmp_path, "\n\n", name="e.jsonl")
    _fails(RunConfig(task_file=empty), f"--task-file {empty}: no items, expected one JSON item a line (see README, "
                                       "Tasks)")
    bad = _file(tmp_path, GOOD[:52] + '{"prompt": \n', name="b.jsonl")
    _fails(RunConfig(task_file=bad), f"--task-file {bad}: line 2: invalid JSON (Expecting value), expected one JSON "
                                     "item a line (see README, Tasks)")
    _fails(RunConfig(task=bad), f"--task {bad}: line 2: invalid JSON (Expecting value), expected one JSON item a line "
                                "(see README, Tasks)")


def test_hub_load_errors_are_one_line(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    _fails(RunConfig(task="xstest", task_path=str(d), scorer_models="builtin"),
           f"--task xstest: {d}: no test.jsonl or test.parquet, expected {d}/<split>.jsonl or .parquet in xstest's "
           "schema (prompt, focus, type, note, label (safe | unsafe))")
    (d / "test.jsonl").write_text('{"prompt": "x"}\n')
    _fails(RunConfig(task="xstest", task_path=str(d), scorer_models="builtin"),
           f"--task xstest: xstest test row 0: row lacks column(s) label (has prompt), expected {d}/<split>.jsonl or "
           ".parquet in xstest's schema (prompt, focus, type, note, label (safe | unsafe))")


def test_a_failing_builtin_factory_is_one_line(task_registry):
    @register_task("broken-test-task")
    def _broken(seed):
        raise ValueError("no items for\nseed 3")

    _fails(RunConfig(task="broken-test-task", seed=3), "--task no items for seed 3")


def test_check_split():
    task = Task("t", "short", [Item(f"i{k}", "What is 1 + 1?", "2", "short") for k in range(30)], 8)
    check_split(task, RunConfig(n_select=8, n_val=4, n_test=18))
    with pytest.raises(SettingsError, match="^" + re.escape("--n-select 8 + --n-val 4 + --n-test 40 = 52 samples, "
                                                            "expected at most the 30 items of task 't'") + "$"):
        check_split(task, RunConfig(n_select=8, n_val=4, n_test=40))
