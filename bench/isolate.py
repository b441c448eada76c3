"""Run a list of benchmark entries in a child process that may crash, hang or run out of time (bench/gpu.sh's
fail-soft runs): a dead child loses only the entry it was in; a new child goes on with the next one.

Protocol: the child prints `@@START i` before entry i and `@@RESULT {json}` after it (the JSON holds "i"); every
other line passes through to this process's stdout. Parent: run_entries(...).
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

START, RESULT = "@@START ", "@@RESULT "


def announce(i: int) -> None:
    print(f"{START}{i}", flush=True)


def report(i: int, payload: dict) -> None:
    print(RESULT + json.dumps(dict(payload, i=i), default=str), flush=True)


def _reader(stream, q):
    for line in stream:
        q.put(line)
    q.put(None)


def _kill(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    p.wait()


def exit_reason(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def run_entries(argv_from, n: int, on_result, deadline: float, entry_timeout: float, env=None) -> list[int]:
    """Run entries 0..n-1: argv_from(i) is the child command that starts at entry i. on_result(i, dict) gets each
    entry's result, or {"error": ...} for the entry a child died, hung (entry_timeout seconds) or ran out of time in
    (deadline: time.monotonic() value). Returns the entries never started (deadline)."""
    i = 0
    while i < n:
        if time.monotonic() >= deadline:
            return list(range(i, n))
        p = subprocess.Popen(argv_from(i), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                             start_new_session=True, bufsize=1)
        q: queue.Queue = queue.Queue()
        threading.Thread(target=_reader, args=(p.stdout, q), daemon=True).start()
        current, t0, done = None, time.monotonic(), i - 1
        why = None
        while True:
            limit = min(deadline, t0 + entry_timeout) if current is not None else deadline
            try:
                line = q.get(timeout=max(0.05, limit - time.monotonic()))
            except queue.Empty:
                if time.monotonic() < limit:
                    continue
                why = "deadline" if time.monotonic() >= deadline else f"timed out after {entry_timeout:.0f}s"
                _kill(p)
                break
            if line is None:
                p.wait()
                break
            if line.startswith(START):
                current, t0 = int(line[len(START):]), time.monotonic()
            elif line.startswith(RESULT):
                payload = json.loads(line[len(RESULT):])
                done, current = payload.pop("i"), None
                on_result(done, payload)
            else:
                sys.stdout.write(line)
                sys.stdout.flush()
        if current is not None:
            on_result(current, dict(error=f"worker {why or exit_reason(p.returncode)} during this entry"))
            i = current + 1
        elif p.returncode not in (0, None) or why:
            # died between entries (start-up, import): skip one entry so a broken start cannot loop forever
            on_result(done + 1, dict(error=f"worker {why or exit_reason(p.returncode)} before this entry"))
            i = done + 2
        else:
            i = done + 1
            if i < n:                     # the child stopped early without an error: skip on
                on_result(i, dict(error="worker ended before this entry"))
                i += 1
    return []
