"""An output folder owned by one run at a time, and left as it was when the run fails on its input.

    with owned_out(out, "run") as path:      # SettingsError if another live run holds <out>/.corrsteer.lock
        ...                                  # writes into path

The lock file <out>/.corrsteer.lock holds the owner's pid, host and start time (JSON). A second run into the same
folder gets one line naming the first; a lock left by a process that no longer runs on this host is taken over with
a log line. Under torchrun only rank 0 takes the lock (the other ranks write nothing there).

When the run fails with an input error (SettingsError), the folder is put back as it was: a folder the run created
is removed with the parent folders it created for it (runs/ of runs/<task>), and an IN_PROGRESS marker or
config.json that the run added to an existing folder is deleted. Any other failure (an interrupt, a full disk, a run
error) leaves the folder for a rerun to resume.
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from corrsteer import files
from corrsteer.files import LOCK  # noqa: F401  (the lock's name, as the tests and the walk read it)
from corrsteer.runtime.checkpoint import MARKER, mark_in_progress, writable_out
from corrsteer.runtime.dist import Dist
from corrsteer.settings import CONFIG_NAME, SettingsError, write_config


def acquire(out: Path, command: str) -> Path:
    """Take <out>/.corrsteer.lock for this process; SettingsError naming the owner when a live run holds it."""
    def busy(owner: dict, path: Path) -> str:
        return (f"--out {out} is in use by another corrsteer run ({files.owner_text(owner)}), expected a folder no "
                f"other run writes: wait for it, choose another --out, or delete {path} if that run is gone")
    return files.acquire(out, command, busy, f"--out {out}")


def release(out: Path) -> None:
    files.release(out)


def _missing_top(path: Path) -> Path | None:
    """The outermost of path and its parents that does not exist yet (what creating path creates); None if it exists."""
    top = None
    for p in (path, *path.parents):
        if p.exists():
            break
        top = p
    return top


def _restore(out: Path, created: Path | None, had: set[str]) -> None:
    """Undo what a run that failed on its input added: the folders it created, or its marker and config.json."""
    if created is not None:
        shutil.rmtree(out, ignore_errors=True)
        for p in out.parents:
            if not p.is_relative_to(created) or any(p.iterdir()):
                break
            p.rmdir()
        return
    for name in (MARKER, CONFIG_NAME):
        if name not in had:
            (out / name).unlink(missing_ok=True)


@contextlib.contextmanager
def owned_out(out: str, command: str, lock: bool = True):
    """--out, checked writable and owned by this run (lock=False: the other ranks of a torchrun job)."""
    path = Path(out)
    created = _missing_top(path)
    had = {p.name for p in path.iterdir()} if path.is_dir() else set()
    writable_out(out)
    if lock:
        acquire(path, command)
    try:
        yield path
    except SettingsError:
        if lock:
            _restore(path, created, had)
        raise
    finally:
        if lock:
            release(path)


def start_outputs(out: Path, cfg, d: Dist, outputs: tuple[str, ...], **context) -> None:
    """At the start of a run into out (rank 0): mark the directory in progress, clear the previous outputs (and
    plans/*.json where plan.json is one of them) and record the settings with `context` in config.json."""
    if not d.main:
        return
    old = [out / n for n in (*outputs, CONFIG_NAME)] + sorted((out / "plans").glob("*.json"))
    for path in old:
        files.refuse_input(path, "--out's output")   # a task file or plan kept inside --out under an output's name
    mark_in_progress(out, cfg.command)
    for name in outputs:
        (out / name).unlink(missing_ok=True)
    if "plan.json" in outputs and (out / "plans").exists():
        for p in (out / "plans").glob("*.json"):
            p.unlink()
    write_config(out, cfg, world_size=d.world, **context)
