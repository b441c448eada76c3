"""Atomic writes: a temporary file that a killed writer left beside its target is deleted when the target is next
written (a live writer's is not), and a file created with atomic_create_text is never seen empty."""
import os
from pathlib import Path

import pytest

import corrsteer.runtime.checkpoint as checkpoint
from corrsteer.runtime.checkpoint import atomic_create_text, atomic_save_tensors, atomic_write_text


def dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


@pytest.mark.parametrize("write", ["text", "tensors", "create"])
def test_a_killed_writers_temp_file_goes_when_its_target_is_written(tmp_path, write):
    dead, live = dead_pid(), os.getppid()
    left = {name: tmp_path / name for name in (f".a.md.tmp{dead}", f".a.md.tmp{live}", f".b.md.tmp{dead}",
                                                f".a.md.tmpx{dead}")}
    for p in left.values():
        p.write_bytes(b"half")
    if write == "text":
        atomic_write_text(tmp_path / "a.md", "new")
    elif write == "tensors":
        atomic_save_tensors(tmp_path / "a.md", {})
    else:
        assert atomic_create_text(tmp_path / "a.md", "new")
    # the dead writer's file of a.md goes; a live writer's, another target's and a name of another form stay
    assert sorted(p.name for p in tmp_path.glob(".*")) == sorted(set(left) - {f".a.md.tmp{dead}"})


@pytest.mark.parametrize("hard_links", [True, False])
def test_create_writes_once_and_never_empty(tmp_path, monkeypatch, hard_links):
    if not hard_links:                     # a filesystem without hard links: exclusive create, then write
        def no_link(src, dst):
            raise PermissionError(1, "Operation not permitted")
        monkeypatch.setattr(checkpoint.os, "link", no_link)
    path = tmp_path / "lock"
    assert atomic_create_text(path, "first")
    assert not atomic_create_text(path, "second")
    assert path.read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["lock"]


def test_create_on_a_full_disk_leaves_nothing(tmp_path, monkeypatch):
    def full(self, text):                  # the temporary file is opened, its content does not fit
        open(self, "w").close()
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left"):
        atomic_create_text(tmp_path / "lock", "first")
    assert list(tmp_path.iterdir()) == []
