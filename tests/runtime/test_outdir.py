"""The output folder: one run at a time (a lock naming its owner, a dead owner's lock taken over), and a run that fails
on its input leaves the folder as it was."""
import json
import os

import pytest

from corrsteer.runtime.checkpoint import MARKER
from corrsteer.runtime.outdir import LOCK, acquire, owned_out, release
from corrsteer.settings import CONFIG_NAME, SettingsError


def test_a_live_owner_keeps_the_folder(tmp_path):
    path = acquire(tmp_path, "run")
    owner = json.loads(path.read_text())
    assert owner["pid"] == os.getpid() and owner["command"] == "run"
    with pytest.raises(SettingsError, match=rf"is in use by another corrsteer run \(pid {os.getpid()} on "):
        acquire(tmp_path, "run")
    release(tmp_path)
    assert not path.exists()


def test_a_dead_owners_lock_is_taken_over(tmp_path):
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)                                                  # a pid that no longer runs
    (tmp_path / LOCK).write_text(json.dumps(dict(pid=dead, host=os.uname().nodename, command="run", started="x")))
    acquire(tmp_path, "eval")
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()


def test_release_leaves_another_runs_lock(tmp_path):
    (tmp_path / LOCK).write_text(json.dumps(dict(pid=1, host="elsewhere")))
    release(tmp_path)
    assert (tmp_path / LOCK).exists()


def test_a_failed_run_leaves_the_folder_as_it_was(tmp_path):
    new = tmp_path / "new"
    with pytest.raises(SettingsError), owned_out(str(new), "run") as out:
        (out / MARKER).write_text("")
        raise SettingsError("bad input")
    assert not new.exists()                                             # created by the run: removed
    nested = tmp_path / "runs" / "task"
    (tmp_path / "kept").mkdir()
    with pytest.raises(SettingsError), owned_out(str(nested), "run"):
        raise SettingsError("bad input")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]     # runs/ too: the run created it for runs/task
    old = tmp_path / "old"
    old.mkdir()
    (old / "report.md").write_text("kept")
    with pytest.raises(SettingsError), owned_out(str(old), "run") as out:
        (out / MARKER).write_text("")
        (out / CONFIG_NAME).write_text("{}")
        raise SettingsError("bad input")
    assert sorted(p.name for p in old.iterdir()) == ["report.md"]      # its own files stay, the lock is gone
