"""The task the settings name, and the checks on it: every bad input is a SettingsError with one line
"<what>, <expected>" (the CLI prints `corrsteer: error: <line>` and exits 2; docs/bad-input.md).

    task = load_task(cfg)      # cfg: task, task_file, seed and the hub options (config.TaskSourceOptions)
    check_split(task, cfg)     # --n-select + --n-val + --n-test fit in the task
    check_plan_split(task, plan.split, cfg)    # eval: the test split shares nothing with the plan's select / val

Order: the --task name, the hub options (which apply to hub tasks only), then the task itself: a hub task
(load_hub_task), a JSONL file (--task-file, or --task ending in .jsonl / .json) or a built-in task.
"""
from __future__ import annotations

import logging
from pathlib import Path

from corrsteer.settings import SettingsError, one_line
from corrsteer.tasks.hub import HUB_TASKS, TaskLoadError, hub_task_names, load_hub_task
from corrsteer.tasks.label_checks import LabelError, check_labels
from corrsteer.tasks.splits import split_overlap
from corrsteer.tasks.task import Task, get_task, list_tasks, load_task_file

TASK_FILE_SUFFIXES = (".jsonl", ".json")


def check_task_name(name: str) -> None:
    """--task is a built-in task, a hub task or a .jsonl / .json file name."""
    known = list_tasks() + hub_task_names()
    if name not in known and not name.endswith(TASK_FILE_SUFFIXES):
        raise SettingsError(f"--task must be one of {', '.join(known)} (or a .jsonl file), got {name!r}")


def check_hub_options(cfg) -> None:
    """--task-path, --constrain, --bbq-condition and --protocol paper apply to the hub tasks only (--constrain to
    their multiple-choice ones)."""
    hub = cfg.task in HUB_TASKS and not cfg.task_file
    if not hub and (cfg.task_path or cfg.constrain or cfg.bbq_condition or cfg.protocol != "chat"
                    or cfg.max_new_tokens):
        which = ("--task-path" if cfg.task_path else "--constrain" if cfg.constrain else
                 "--bbq-condition" if cfg.bbq_condition else "--protocol paper" if cfg.protocol != "chat" else
                 "--max-new-tokens")
        raise SettingsError(f"{which} applies to the hub tasks ({', '.join(hub_task_names())}), not {cfg.task!r}")
    if cfg.bbq_condition and cfg.task != "bbq":
        raise SettingsError(f"--bbq-condition applies to --task bbq, not {cfg.task!r}")
    if hub and cfg.constrain and HUB_TASKS[cfg.task].kind != "mc":
        raise SettingsError(f"--constrain applies to multiple-choice tasks, not {cfg.task}")


def task_file(path: str, flag: str = "--task-file") -> Task:
    """A JSONL task file, loaded; missing, unreadable, not UTF-8, empty and malformed files are usage errors."""
    p = Path(path)
    if not p.is_file():
        raise SettingsError(f"{flag} {path}: no such file, expected a JSONL task file")
    data = p.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise SettingsError(f"{flag} {path}: line {line} is not UTF-8 (byte 0x{data[e.start]:02x}), expected a "
                            "UTF-8 JSONL file") from None
    try:
        task = load_task_file(p)
        check_labels(p, task.kind == "label")
    except ValueError as e:
        msg = one_line(e)
        expected = e.expected if isinstance(e, LabelError) else "expected one JSON item a line (see README, Tasks)"
        raise SettingsError(f"{flag} {msg if msg.startswith(str(p)) else f'{path}: {msg}'}, {expected}") from None
    return task


def hub_task(cfg) -> Task:
    """The hub task cfg.task names; a missing split file or a row outside the hub's schema is a usage error."""
    where = f"{cfg.task_path}/<split>.jsonl or .parquet" if cfg.task_path else "the hub's splits"
    if cfg.task_path and not Path(cfg.task_path).is_dir():
        what = "is a file" if Path(cfg.task_path).exists() else "no such folder"
        raise SettingsError(f"--task-path {cfg.task_path}: {what}, expected a folder holding {cfg.task}'s splits as "
                            "<split>.jsonl or <split>.parquet")
    quiet = logging.getLogger("datasets")
    level, quiet.level = quiet.level, logging.CRITICAL        # its tracebacks: the one line below says it all
    try:
        return load_hub_task(cfg.task, cfg.protocol, cfg.task_path, cfg.constrain, cfg.scorer_models,
                             cfg.max_new_tokens, cfg.bbq_condition)
    except TaskLoadError as e:
        raise SettingsError(f"--task {cfg.task}: {one_line(e)}, expected {where} in {cfg.task}'s schema "
                            f"({HUB_TASKS[cfg.task].schema})") from None
    except Exception as e:           # datasets / pyarrow: a split file it cannot read, the hub unreachable
        if type(e).__module__.split(".")[0] not in ("datasets", "pyarrow", "huggingface_hub", "requests"):
            raise
        raise SettingsError(f"--task {cfg.task}: {type(e).__name__}: {one_line(e, 160)}, expected {where} readable "
                            f"by `datasets` in {cfg.task}'s schema ({HUB_TASKS[cfg.task].schema})") from None
    finally:
        quiet.setLevel(level)


def load_task(cfg) -> Task:
    """The task the settings name (hub, file or built-in), checked; SettingsError with one line otherwise."""
    check_task_name(cfg.task)
    check_hub_options(cfg)
    if cfg.task_file:
        return task_file(cfg.task_file)
    if cfg.task in HUB_TASKS:
        return hub_task(cfg)
    if cfg.task.endswith(TASK_FILE_SUFFIXES):
        return task_file(cfg.task, "--task")
    try:
        return get_task(cfg.task, seed=cfg.seed)
    except ValueError as e:
        raise SettingsError(f"--task {one_line(e)}") from None


def check_split(task: Task, cfg) -> None:
    """--n-select + --n-val + --n-test must fit in the task."""
    asked = cfg.n_select + cfg.n_val + cfg.n_test
    if asked > len(task.items):
        raise SettingsError(f"--n-select {cfg.n_select} + --n-val {cfg.n_val} + --n-test {cfg.n_test} = {asked} "
                            f"samples, expected at most the {len(task.items)} items of task {task.name!r}")
    try:
        task.split(cfg.n_select, cfg.n_val, cfg.n_test, seed=cfg.seed)
    except ValueError as e:            # grouped splits: whole groups may not fill the sizes
        raise SettingsError(f"--n-select {cfg.n_select} + --n-val {cfg.n_val} + --n-test {cfg.n_test}: "
                            f"{one_line(e)}, expected smaller splits") from None


def check_plan_split(task: Task, record: dict, cfg) -> None:
    """`eval`: the test split (from cfg's sizes and seed) shares no item and no group with the select / val items
    of the run that wrote the plan (its `split` record; plans without one, or of another task, are not checked)."""
    if not record or record.get("task") != task.name:
        return
    try:
        run = task.split(record["n_select"], record["n_val"], record["n_test"], seed=record["seed"])
    except (KeyError, TypeError, ValueError) as e:
        raise SettingsError(f"--plan: its split record {one_line(e)} does not draw from task {task.name!r}, "
                            "expected the record corrsteer run wrote") from None
    test = task.split(cfg.n_select, cfg.n_val, cfg.n_test, seed=cfg.seed).test
    why = split_overlap(record, run, test)
    if why:
        raise SettingsError(f"--plan: {why} (the run used --n-select {record['n_select']} --n-val {record['n_val']} "
                            f"--n-test {record['n_test']} --seed {record['seed']}), expected a test split disjoint "
                            "from them: pass the run's sizes and seed")
