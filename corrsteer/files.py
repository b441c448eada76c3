"""Every file corrsteer writes, written whole or not at all, never over one of the command's own inputs, and folders
owned by one process at a time.

    atomic_write_text(path, text) / atomic_write_bytes / atomic_save_tensors / atomic_torch_save
    with atomic_path(path) as tmp: writer(tmp)      # any writer that needs a file name (GGUF, PNG)
    with atomic_dir(path) as tmp: ...               # a folder (an SAE, a converted model), swapped in whole
    protect("--plan", path)                         # an input: no writer above may write over it (SettingsError)
    acquire(folder, command, busy) / release(folder)   # <folder>/.corrsteer.lock, one live owner at a time

A file is written to a temporary file beside it (same folder, so the rename cannot cross filesystems), flushed to
disk (fsync) and renamed over the target: a reader, a kill or a full disk leaves the old file or the new one, never
half of one. A full disk raises DiskFull (an OSError, ENOSPC) naming the file, whose old content is intact; the
temporary file is deleted. A symlinked target is written through the link (the file it points to is replaced).
Temporary files a killed writer left are deleted when their target is next written.
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
import glob
import io
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import torch

from corrsteer.errors import SettingsError

LOCK = ".corrsteer.lock"
_INPUTS: dict[tuple[int, int], str] = {}       # (st_dev, st_ino) of the command's input files -> "--plan F"


def log(msg: str) -> None:
    print(f"corrsteer: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# the command's inputs: never written over
# ---------------------------------------------------------------------------------------------------------------
def _key(path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)           # follows symlinks; hard links share (st_dev, st_ino)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def protect(option: str, path) -> None:
    """Record `path` (given as `option`) as an input of this command: writing over it is refused."""
    key = _key(path)
    if key is not None and Path(path).is_file():
        _INPUTS[key] = f"{option} {path}"


def unprotect_all() -> None:
    _INPUTS.clear()


def refuse_input(path, option: str | None = None) -> None:
    """SettingsError when `path` is (through symlinks, relative paths or hard links) one of the protected inputs."""
    key = _key(path)
    if key is not None and key in _INPUTS:
        what = f"{option} {path}" if option else str(path)
        raise SettingsError(f"{what} is the same file as {_INPUTS[key]}, expected an output that is not one of the "
                            "command's inputs (writing it would destroy the input)")


def disk_full(e: BaseException) -> bool:
    """A full disk or quota, as OSError (ENOSPC, EDQUOT, EFBIG past a file-size limit) or as another library's
    error (SafetensorError) saying so."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    return any(s in str(e) for s in ("No space left on device", "Disk quota exceeded", "File too large"))


class DiskFull(OSError):
    """A write that found no space: `filename` was not changed (its old content, if any, is intact)."""

    def __init__(self, path, cause: BaseException):
        super().__init__(errno.ENOSPC, f"no space left on device writing {path}", str(path))
        self.cause = cause

    def __str__(self) -> str:
        return self.strerror


# ---------------------------------------------------------------------------------------------------------------
# atomic files
# ---------------------------------------------------------------------------------------------------------------
def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def alive(pid: int) -> bool:
    """Whether process `pid` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # someone else's live process
        return True
    return True


def remove_stale_tmp(path: Path) -> None:
    """Delete the temporary files (or folders) of `path` that a killed writer left (their process no longer runs)."""
    for p in path.parent.glob(f".{glob.escape(path.name)}.tmp*"):
        pid = p.name.rsplit(".tmp", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _target(path) -> Path:
    """Where writing `path` lands: the file a symlink points to, else the path itself."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


@contextlib.contextmanager
def atomic_path(path):
    """A temporary file name beside `path` for a writer to fill; on success it replaces `path` in one rename."""
    path = _target(path)
    refuse_input(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    tmp = _tmp(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        with contextlib.suppress(OSError):
            _fsync(path.parent)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if disk_full(e) and not isinstance(e, DiskFull):
            raise DiskFull(path, e) from None
        raise
    remove_stale_tmp(path)


def atomic_write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_tensors(path, tensors: dict, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)


def atomic_torch_save(path, obj) -> Path:
    """torch.save, serialised in memory first (torch's own write errors on a full disk do not say so)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_create_text(path, text: str) -> bool:
    """Create `path` holding `text` in one step, so that it is never seen empty; False when it exists already."""
    path = Path(path)
    tmp = _tmp(path)
    try:
        tmp.write_text(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:              # a filesystem without hard links: create exclusively, then write
            with open(path, "x") as f:
                f.write(text)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
        remove_stale_tmp(path)
    return True


# ---------------------------------------------------------------------------------------------------------------
# atomic folders
# ---------------------------------------------------------------------------------------------------------------
def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), exchange) == 0


@contextlib.contextmanager
def atomic_dir(path):
    """A temporary folder beside `path` to fill; on success its files are flushed and it takes the place of `path`
    in one step (an old folder is swapped out, then deleted): a reader sees the old folder or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync(f)
        if not path.exists():
            os.rename(tmp, path)
        elif not _exchange(tmp, path):           # no atomic swap here: the old folder aside, then the new one in
            old = path.with_name(f".{path.name}.old{os.getpid()}")
            os.rename(path, old)
            os.rename(tmp, path)
            tmp = old
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(e) and not isinstance(e, DiskFull):
            raise DiskFull(path, e) from None
        raise
    shutil.rmtree(tmp, ignore_errors=True)      # the old folder, swapped out
    remove_stale_tmp(path)


# ---------------------------------------------------------------------------------------------------------------
# folder locks
# ---------------------------------------------------------------------------------------------------------------
def read_lock(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def acquire(folder: Path, command: str, busy, label: str) -> Path:
    """Take <folder>/.corrsteer.lock for this process. A live owner: SettingsError(busy(owner, lock path)); a lock
    left by a process that no longer runs on this host is taken over with a log line naming `label`."""
    path = Path(folder) / LOCK
    me = dict(pid=os.getpid(), host=socket.gethostname(), command=command,
              started=datetime.datetime.now().isoformat(timespec="seconds"))
    for _ in range(2):
        if atomic_create_text(path, json.dumps(me)):
            return path
        owner = read_lock(path)
        pid, host = owner.get("pid"), owner.get("host")
        if isinstance(pid, int) and host == me["host"] and not alive(pid):
            log(f"{label}: taking over the lock of pid {pid} (started {owner.get('started')}), which no longer runs")
            path.unlink(missing_ok=True)
            continue
        raise SettingsError(busy(owner, path))
    raise SettingsError(f"{label}: could not take the lock {path}, expected a folder no other process writes")


def release(folder: Path) -> None:
    path = Path(folder) / LOCK
    if read_lock(path).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def owner_text(owner: dict) -> str:
    return (f"pid {owner.get('pid')} on {owner.get('host')}, `corrsteer {owner.get('command')}` since "
            f"{owner.get('started')}")


# ---------------------------------------------------------------------------------------------------------------
# output paths
# ---------------------------------------------------------------------------------------------------------------
def file_in_the_way(path) -> Path | None:
    """The nearest of `path`'s parents that exists and is not a folder (creating `path` would fail on it)."""
    for p in Path(path).parents:
        if p.exists():
            return None if p.is_dir() else p
    return None


def writable_file(out, option: str = "--out", example: str = "FILE") -> Path:
    """An output file path: not a folder, its folders creatable (created here), not one of the command's inputs."""
    path = Path(out)
    if path.is_dir():
        raise SettingsError(f"{option} {out} is a directory, expected a file path (e.g. {path / example})")
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise SettingsError(f"{option} {out}: {blocker} is a file, not a folder, expected a file path whose "
                            "folders are folders")
    refuse_input(path, option)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SettingsError(f"{option} {out} is not writable ({e.strerror or e}), expected a file path in a folder "
                            "you can create and write to") from None
    if not os.access(path.parent, os.W_OK):
        raise SettingsError(f"{option} {out} is not writable (Permission denied), expected a file path in a folder "
                            "you can create and write to")
    return path
