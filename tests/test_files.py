"""corrsteer.files: atomic files and folders, inputs never written over, folder locks."""
import errno
import os
import subprocess
import sys

import pytest
from fakes import tiny_bank

from corrsteer import files
from corrsteer.errors import SettingsError
from corrsteer.sae.bank import load_sae_dir, save_sae_dir


@pytest.fixture(autouse=True)
def clean_inputs():
    yield
    files.unprotect_all()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    p = tmp_path / "a.json"
    p.write_text("old")

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files, "_fsync", full)
    with pytest.raises(files.DiskFull, match=f"no space left on device writing {p}"):
        files.atomic_write_text(p, "new" * 1000)
    assert p.read_text() == "old" and sorted(x.name for x in tmp_path.iterdir()) == ["a.json"]


def test_a_symlinked_target_is_written_through_the_link(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    (tmp_path / "link.txt").symlink_to(real)
    files.atomic_write_text(tmp_path / "link.txt", "new")
    assert (tmp_path / "link.txt").is_symlink() and real.read_text() == "new"


@pytest.mark.parametrize("alias", ["same", "symlink", "hardlink", "relative"])
def test_an_input_is_never_written_over(tmp_path, monkeypatch, alias):
    src = tmp_path / "plan.json"
    src.write_text("input")
    files.protect("--plan", src)
    monkeypatch.chdir(tmp_path)
    out = {"same": src, "relative": "plan.json", "symlink": tmp_path / "s.json", "hardlink": tmp_path / "h.json"}[alias]
    if alias == "symlink":
        out.symlink_to(src)
    if alias == "hardlink":
        os.link(src, out)
    with pytest.raises(SettingsError, match=f"is the same file as --plan {src}"):
        files.atomic_write_text(out, "output")
    assert src.read_text() == "input"


def test_an_other_file_is_written(tmp_path):
    src = tmp_path / "plan.json"
    src.write_text("input")
    files.protect("--plan", src)
    files.atomic_write_text(tmp_path / "other.json", "output")
    assert (tmp_path / "other.json").read_text() == "output" and src.read_text() == "input"


def test_a_folder_is_swapped_in_whole(tmp_path):
    target = tmp_path / "d"
    for text in ("one", "two"):
        with files.atomic_dir(target) as tmp:
            (tmp / "a").write_text(text)
            (tmp / "b").write_text(text)
    assert (target / "a").read_text() == (target / "b").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_a_failed_folder_write_keeps_the_old_folder(tmp_path):
    target = tmp_path / "d"
    with files.atomic_dir(target) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), files.atomic_dir(target) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("killed")
    assert (target / "a").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_a_reader_sees_the_old_sae_or_the_new_one(tiny_lm, tmp_path):
    e = tiny_bank(tiny_lm, layers=(1,))[1]
    path = save_sae_dir(tmp_path / e.hook.hook_name, e.sae, e.hook, "m")
    wide = tiny_bank(tiny_lm, layers=(1,), d_sae=2 * e.sae.d_sae)[1]
    save_sae_dir(path, wide.sae, wide.hook, "m")
    assert load_sae_dir(path).sae.d_sae == 2 * e.sae.d_sae
    assert sorted(p.name for p in tmp_path.iterdir()) == [e.hook.hook_name]      # no temporary or old folder left


def test_a_kill_mid_write_leaves_the_old_file(tmp_path):
    """A real SIGKILL while the writer is between writing the temporary file and renaming it."""
    p = tmp_path / "x.bin"
    p.write_bytes(b"old")
    code = ("import os, signal, sys\nfrom corrsteer import files\n"
            "files._fsync = lambda path: os.kill(os.getpid(), signal.SIGKILL)\n"
            f"files.atomic_write_bytes({str(p)!r}, b'new' * 100000)\n")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ})
    assert r.returncode == -9 and p.read_bytes() == b"old"
    files.atomic_write_bytes(p, b"next")                     # the next write deletes the killed one's temporary
    assert p.read_bytes() == b"next" and sorted(x.name for x in tmp_path.iterdir()) == ["x.bin"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_real_full_disk_keeps_the_old_file(tmp_path):
    m = tmp_path / "m"
    m.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(m)], capture_output=True).returncode:
        pytest.skip("mount not allowed here")
    try:
        (m / "x.bin").write_bytes(b"old")
        with pytest.raises(files.DiskFull):
            files.atomic_write_bytes(m / "x.bin", b"n" * 200_000)
        assert (m / "x.bin").read_bytes() == b"old" and sorted(x.name for x in m.iterdir()) == ["x.bin"]
    finally:
        subprocess.run(["umount", str(m)], capture_output=True)
