"""Where a run's time and memory go, stage by stage: always on, cheap (a few /proc reads per stage).

    with stage("SAE training") as rec: ...     # a nested stage; rec (a dict) is filled in when it ends
    step("collect")                            # ends the innermost stage's current step, starts the next one
    end_step()                                 # ends the current step (at the end of a stage's body)
    summary()                                  # the whole process so far: machine, totals, every stage

Each record holds name, wall_s, cpu_s (user + system time of all the process's threads), peak_rss_mb (the largest
resident set while the stage ran) and its sub-stages. The peaks are exact on Linux: entering a stage folds the
kernel's high-water mark (VmHWM) into every open stage and resets it (writing 5 to /proc/self/clear_refs); where
that is not possible they fall back to the process's peak so far (peak_kind says which).
"""
from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")    # what decides the CPU kernels' speed


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak() -> bool:
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def machine() -> dict:
    """The CPU (model name and the flags that decide the kernels' speed), its logical CPUs, the CPUs this process
    may use, torch's thread count, the memory and the load average: what makes two runs' figures comparable."""
    model, flags = "unknown", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = val.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(val.split())
    torch = sys.modules.get("torch")
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    return dict(cpu=model, cpu_flags=[f for f in CPU_FLAGS if f in flags], logical_cpus=os.cpu_count(),
                usable_cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                torch_threads=torch.get_num_threads() if torch else None, memory_gb=mem,
                load_average=[round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None)


class _Open:
    def __init__(self, name: str, is_step: bool):
        self.name, self.is_step = name, is_step
        self.t0, self.cpu0 = time.perf_counter(), _cpu_seconds()
        self.peak_kb = _status_kb("VmRSS") or 0
        self.record: dict = dict(name=name)
        self.children: list[dict] = []


class Profiler:
    """A stack of open stages under a root that opens with the profiler (the whole process, see summary())."""

    def __init__(self):
        self.exact = _reset_peak()
        self.stack = [_Open("process", False)]

    def _fold(self) -> None:
        """Fold the high-water mark since the last reset into every open stage, then reset it."""
        hwm = _status_kb("VmHWM")
        if hwm is None:
            return
        if not self.exact:          # the process's peak so far: an upper bound of every open stage's
            hwm = max(hwm, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        for o in self.stack:
            o.peak_kb = max(o.peak_kb, hwm)
        if self.exact:
            _reset_peak()

    def enter(self, name: str, is_step: bool = False) -> dict:
        self._fold()
        self.stack.append(_Open(name, is_step))
        return self.stack[-1].record

    def exit(self) -> dict:
        self._fold()
        o = self.stack.pop()
        o.record.update(self._figures(o))
        if o.children:
            o.record["stages"] = o.children
        self.stack[-1].children.append(o.record)
        return o.record

    def _figures(self, o: _Open) -> dict:
        return dict(wall_s=round(time.perf_counter() - o.t0, 2), cpu_s=round(_cpu_seconds() - o.cpu0, 2),
                    peak_rss_mb=round(o.peak_kb / 1024, 1))

    def end_step(self) -> None:
        if len(self.stack) > 1 and self.stack[-1].is_step:
            self.exit()

    def step(self, name: str) -> dict:
        self.end_step()
        return self.enter(name, is_step=True)

    def summary(self) -> dict:
        """The process so far: machine, wall / CPU / peak RSS since the profiler opened, the stages ended so far
        (open ones with their figures up to now)."""
        self._fold()
        root = self.stack[0]
        out = dict(machine=machine(), peak_kind="per stage" if self.exact else "process peak so far",
                   **self._figures(root))
        stages, open_ = list(root.children), self.stack[1:]
        if open_:
            stages.append(_snapshot(self, open_))
        out["stages"] = stages
        return out


def _snapshot(p: Profiler, open_: list) -> dict:
    """The open stages as records (innermost last), with their figures so far."""
    rec = None
    for o in reversed(open_):
        r = dict(o.record, **p._figures(o), open=True)
        kids = list(o.children) + ([rec] if rec else [])
        if kids:
            r["stages"] = kids
        rec = r
    return rec


PROFILE = Profiler()


@contextlib.contextmanager
def stage(name: str):
    """A nested stage of the process's profile; yields its record (filled in when the stage ends)."""
    rec = PROFILE.enter(name)
    depth = len(PROFILE.stack)
    try:
        yield rec
    finally:
        while len(PROFILE.stack) > depth:       # a step left open inside the stage
            PROFILE.exit()
        PROFILE.exit()


def step(name: str) -> dict:
    """End the innermost stage's current step and start the next one."""
    return PROFILE.step(name)


def end_step() -> None:
    PROFILE.end_step()


def summary() -> dict:
    return PROFILE.summary()


def brief(rec: dict) -> str:
    """'wall 12 min 3 s, CPU 1400 s, peak RSS 2.41 GB' of a record."""
    m, s = divmod(round(rec["wall_s"]), 60)
    wall = f"{m} min {s} s" if m else f"{s} s"
    return f"wall {wall}, CPU {rec['cpu_s']:.0f} s, peak RSS {rec['peak_rss_mb'] / 1024:.2f} GB"
