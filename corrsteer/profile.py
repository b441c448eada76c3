"""Where a run's time and memory go, stage by stage: always on, cheap (a few /proc reads per stage).

    with stage("SAE training") as rec: ...     # a nested stage; rec (a dict) is filled in when it ends
    step("collect")                            # ends the innermost stage's current step, starts the next one
    end_step()                                 # ends the current step (at the end of a stage's body)
    summary()                                  # the whole process so far: machine, totals, every stage
    start()                                    # start afresh (a command's own profile)

Each record holds name, wall_s, cpu_s (user + system time of all the process's threads), peak_rss_mb (the largest
resident set seen while the stage ran: a daemon thread samples VmRSS every SAMPLE_S seconds, and every stage boundary
reads it too, so a spike shorter than that may be missed) and its sub-stages. The whole process's peak is the
kernel's own high-water mark (VmHWM), which is never reset, so `/usr/bin/time -v` reads the same peak.

Every stage boundary also hands the heap's free memory back to the system (glibc's malloc_trim): freed tensors of a
few MB stay in the heap otherwise, and what one stage freed (the training activations of a layer, the float32 model
copy) would be counted again under the next one's peak (~100-250 MB a layer while training SAEs).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import sys
import threading
import time
from pathlib import Path

_STATUS = Path("/proc/self/status")
SAMPLE_S = 0.02               # the sampler's period (~0.1% of a core)
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


def _libc_trim():
    with contextlib.suppress(OSError, AttributeError, TypeError):
        return ctypes.CDLL(None).malloc_trim          # the process's own C library: glibc has it, others not
    return None


_TRIM = _libc_trim()


def trim_heap() -> None:
    """Give the heap's free memory back to the system (glibc; nothing elsewhere). Takes ~1 ms."""
    if _TRIM is not None:
        _TRIM(0)


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
        self.lock = threading.Lock()
        self.sampler: threading.Thread | None = None
        self.restart()

    def restart(self) -> None:
        self.stack = [_Open("process", False)]
        self.seen_kb = self.stack[0].peak_kb       # the largest RSS sampled since the last boundary

    def _sample(self) -> None:
        while True:
            time.sleep(SAMPLE_S)
            kb = _status_kb("VmRSS")
            if kb is None:
                return
            with self.lock:
                self.seen_kb = max(self.seen_kb, kb)

    def _fold(self) -> None:
        """Fold the largest RSS seen since the last boundary into every open stage, then start seeing afresh."""
        if self.sampler is None and _status_kb("VmRSS") is not None:
            self.sampler = threading.Thread(target=self._sample, name="corrsteer-profile", daemon=True)
            self.sampler.start()
        now = _status_kb("VmRSS") or 0
        with self.lock:
            seen, self.seen_kb = max(self.seen_kb, now), now
        for o in self.stack:
            o.peak_kb = max(o.peak_kb, seen)

    def enter(self, name: str, is_step: bool = False) -> dict:
        trim_heap()
        self._fold()
        self.stack.append(_Open(name, is_step))
        return self.stack[-1].record

    def exit(self) -> dict:
        trim_heap()
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
        """The process so far: machine, wall / CPU / peak RSS since the profiler (re)started, the process's own
        peak (VmHWM: since it began), the stages ended so far (open ones with their figures up to now)."""
        self._fold()
        root = self.stack[0]
        hwm = _status_kb("VmHWM")
        out = dict(machine=machine(), **self._figures(root),
                   process_peak_rss_mb=round(hwm / 1024, 1) if hwm else None)
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


def start() -> None:
    """Start the process's profile afresh (a command's own figures, when one process runs several commands)."""
    PROFILE.restart()


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
