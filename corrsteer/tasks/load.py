"""The task a command's settings name: built-in, JSONL file or hub task, with one-line usage errors.
(Interim: the tasks branch replaces this module.)"""
from __future__ import annotations

from pathlib import Path

from corrsteer.config import SettingsError, one_line
from corrsteer.tasks.hub import HUB_TASKS, load_hub_task
from corrsteer.tasks.task import get_task, load_task_file


def task_file(path: str, flag: str = "--task-file"):
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
        return load_task_file(p)
    except ValueError as e:
        raise SettingsError(f"{flag} {one_line(e)}, expected one JSON item a line (see README, Tasks)") from None


def load_task(cfg):
    """The task cfg names (hub, file or built-in)."""
    if not cfg.task_file and cfg.task in HUB_TASKS:
        return load_hub_task(cfg.task, cfg.protocol, cfg.task_path, cfg.constrain, cfg.scorer_models,
                             cfg.max_new_tokens, cfg.bbq_condition)
    if cfg.task_file:
        return task_file(cfg.task_file)
    if cfg.task.endswith((".jsonl", ".json")):
        return task_file(cfg.task, "--task")
    try:
        return get_task(cfg.task, seed=cfg.seed)
    except ValueError as e:
        raise SettingsError(f"--task {one_line(e)}") from None


def check_split(task, cfg) -> None:
    """--n-select + --n-val + --n-test must fit in the task."""
    asked = cfg.n_select + cfg.n_val + cfg.n_test
    if asked > len(task.items):
        raise SettingsError(f"--n-select {cfg.n_select} + --n-val {cfg.n_val} + --n-test {cfg.n_test} = {asked} "
                            f"samples, expected at most the {len(task.items)} items of task {task.name!r}")
