"""The walk's cases for issue 40 (bench/bad_input_walk.py): export, import and generate onto their own inputs, a kill
and a full disk while they write, prompts that ask nothing or hold chat control tokens, errors naming what the user
gave, SIGTERM, two `train-sae` at once. Each README row of tests/cli/test_bad_input_safety.py runs as a real process
with the default model, built by the test's own builder; the faults the tests fake are made real:

  - full disk: a small tmpfs (root; `mount -t tmpfs -o size=...`), filled, the output an existing file on it;
  - kill during export: a real SIGKILL of the exporting process at its worst point, with the new file's bytes in the
    temporary file and the rename not yet done (the process patches corrsteer.files._fsync to kill itself there:
    the one place a kill could leave a truncated file if the write were not atomic);
  - SIGTERM: sent to a real `run` a few seconds after its model loaded;
  - two `train-sae` on one SAE folder: the second starts while the first holds the folder.

Each case names the files that must keep their bytes (Case.keep): a change is the verdict "destroyed".
"""
from __future__ import annotations

import importlib
import json
import signal
import subprocess
import time
from pathlib import Path

from bench.bad_input_cases import REAL, SLOW, Case, child_env, default_sigint, full_tmpfs, python

tbs = importlib.import_module("test_bad_input_safety")     # tests/cli, on sys.path once bad_input_cases is imported


def row_cases(d: Path) -> dict:
    """Every row of the test's ROWS and CONTROL_ROWS, its files kept byte for byte."""
    out = {}
    for rid, build, _, keep in tbs.ROWS:
        out[rid] = lambda build=build, keep=keep, rid=rid: Case(
            build(d, REAL), keep=[d / k for k in keep],
            env={"CORRSTEER_CACHE": str(d / "file")} if rid == "cache-env-file" else None)
    for rid, build, _ in tbs.CONTROL_ROWS:
        out[rid] = lambda build=build: Case(build(d, REAL), keep=[d / "t.jsonl"] if "task" in rid else [])
    return out


def full_disk(d: Path, argv_of) -> Case | None:
    """The output an existing file on a filled tmpfs: the old bytes must stay, one line must say so."""
    m = full_tmpfs(d, "64k", fill=False)
    if m is None:
        return None
    (m / "x.pt").write_bytes(b"old contents")
    subprocess.run(["dd", "if=/dev/zero", f"of={m}/fill", "bs=4k"], capture_output=True)
    return Case(argv_of(m / "x.pt"), keep=[m / "x.pt", d / "plan.json", d / "cv.gguf"],
                note="--out an existing file on a full tmpfs")


def kill_during_export(d: Path) -> Case:
    """SIGKILL with the new GGUF written to the temporary file, before the rename; the old GGUF must stay whole."""
    plan = tbs.plan_file(d, REAL)
    old = Path(tbs.gguf_file(d, REAL))
    code = ("import os, signal, sys\nfrom corrsteer import files\nfrom corrsteer.cli.main import main\n"
            "files._fsync = lambda path: os.kill(os.getpid(), signal.SIGKILL)\n"
            f"sys.exit(main(['export', {plan!r}, '--format', 'gguf-control-vector', '--out', {str(old)!r}, "
            "'--allow-prompt-positions']))\n")

    def readable():
        from corrsteer.export.gguf import read_directions
        try:
            read_directions(old)
        except ValueError as e:
            return False, f"the old GGUF is unreadable: {e}"
        return True, "old GGUF readable"
    return Case(["-c", code], code=-signal.SIGKILL, keep=[old, Path(plan)], check=readable, raw=True,
                note="SIGKILL between writing the temporary file and the rename")


def sigterm_run(d: Path) -> Case:
    argv = tbs.RUN(d, "--variant", "S", "--n-select", "48", "--n-val", "8", "--n-test", "8")

    def resumable():
        out = d / "out"
        ok = out.exists() and not (out / ".corrsteer.lock").exists() and (out / "IN_PROGRESS").exists()
        return ok, f"out: {sorted(p.name for p in out.iterdir()) if out.exists() else None}"
    return Case(argv, code=143, interrupt=signal.SIGTERM, limit=SLOW, check=resumable,
                note="SIGTERM 3 s after the model loaded: one line, lock released, folder left to resume")


TRAIN = ["--layers", "1", "--d-sae", "64", "--k", "4", "--train-tokens", "2000", "--eval-tokens", "500",
         "--chat-prompts", "8", "--eval-task-prompts", "4", "--epochs", "1", "--answer-tokens", "8"]


def two_trainers(d: Path) -> Case:
    """A first `train-sae` into D/sd holding the folder; the second (the case) must refuse in one line and leave the
    first one alone: still running, still holding its lock; the first is then stopped with SIGTERM (training to the
    end takes over 15 min on a loaded 2-core CPU) and must end in exit 143 with its lock released."""
    sd = d / "sd"
    err = open(d / "first.err", "w")
    first = subprocess.Popen(python() + ["train-sae", "--model", "default", "--sae-dir", str(sd), *TRAIN], cwd=d,
                             env=child_env({}), stdout=subprocess.DEVNULL, stderr=err, preexec_fn=default_sigint)
    for _ in range(3000):              # loading the model on a loaded CPU: up to 5 min
        if (sd / ".corrsteer.lock").exists() or first.poll() is not None:
            break
        time.sleep(0.1)

    def check():
        running = first.poll() is None
        owner = json.loads((sd / ".corrsteer.lock").read_text()).get("pid") if running else None
        first.send_signal(signal.SIGTERM)
        rc = first.wait(SLOW)
        err.close()
        released = not (sd / ".corrsteer.lock").exists()
        return running and owner == first.pid and rc == 143 and released, (
            f"the first train-sae: running {running}, lock owner {owner} (pid {first.pid}), exit {rc} on SIGTERM, "
            f"lock released {released} " + (d / "first.err").read_text()[-800:])
    return Case(["train-sae", "--model", "default", "--sae-dir", str(sd), *TRAIN], check=check, limit=SLOW,
                note="a second train-sae while the first trains into the same folder")


def two_exports(d: Path) -> Case:
    """Two exports of one plan to one file at once: the file ends whole (one of them), both exit 0."""
    plan = tbs.plan_file(d, REAL)
    argv = ["export", plan, "--format", "neuronpedia", "--out", str(d / "np.json")]
    other = subprocess.Popen(python() + argv, cwd=d, env=child_env({}), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)

    def check():
        _, e = other.communicate(timeout=300)
        try:
            json.loads((d / "np.json").read_text())
        except ValueError as x:
            return False, f"np.json is not whole: {x}"
        return other.returncode == 0 and not list(d.glob(".np.json.tmp*")), f"other exit {other.returncode} {e[-300:]}"
    return Case(argv, code=0, keep=[Path(plan)], check=check, note="two exports to one file at once")


def generate_cache_is_plan(d: Path) -> Case:
    plan = tbs.plan_file(d, REAL)
    return Case(["generate", "--plan", plan, "hi"], env={"CORRSTEER_CACHE": plan}, keep=[Path(plan)],
                note="CORRSTEER_CACHE names the plan generate reads")


def safety_cases(d: Path) -> dict:
    return {**row_cases(d),
            "disk-full-export": lambda: full_disk(d, lambda out: [
                "export", tbs.plan_file(d, REAL), "--format", "lm-eval", "--out", str(out),
                "--allow-prompt-positions"]),
            "disk-full-import": lambda: full_disk(d, lambda out: ["import", tbs.gguf_file(d, REAL), "--out", str(out)]),
            "sigterm": lambda: sigterm_run(d),
            "train-sae-locked": lambda: two_trainers(d),
            "issue40-kill-during-export": lambda: kill_during_export(d),
            "issue40-two-exports": lambda: two_exports(d),
            "issue40-generate-cache-is-plan": lambda: generate_cache_is_plan(d)}


EXTRA = ("issue40-kill-during-export", "issue40-two-exports", "issue40-generate-cache-is-plan")
