"""Walk-through of the bad-input table (docs/bad-input.md) with real processes (opt-in, not in CI; issue 29).

Every row of the table (and the issue's own cases, one extra: a 1 MB prompt) runs as a real `python -m corrsteer`
process with the real default model (SmolLM2-135M-Instruct, the offline GGUF wheel) where the row gets that far,
each with a time limit (a row still running then is a hang). A row's input is built by the builder of the test that
backs it (tests/cli/test_bad_input.py, test_bad_input_more.py: the tests are not a package, so their folders go on
sys.path here), with the tiny test model swapped for the default one: `--model <folder>/model` becomes
`--model default`, the SAEs are random sae-lens SAEs of the default model's width, prompts meant to overflow the
tiny model's 512-token context are scaled to the default model's 8192, a plan's missing layer is 99. The rows the
tests fake (full disk, Ctrl-C, a live lock, pip failing, a wheel not installed) are made real: a full tmpfs (root
only; skipped otherwise), SIGINT, a lock held by this process, pip without an index, a shadow package without the
GGUF file.

Each case is classified: ok (one line `corrsteer: error: ...`, the last, with the exit status the row names; or the
row's non-error outcome), traceback (any "Traceback" on stderr), silent (exit 0 where an error was due, or the
outcome check failed: a silent wrong result), wrong-exit, multi-line (more than one error line, or not the last),
hang (past the limit); late marks a "before the model" row that loaded the model.

    OMP_NUM_THREADS=1 nice python -m bench.bad_input_walk [--only ID,ID] [--timeout 120]

writes bench/results/bad-input-walk-<device>-<date>.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bad_input_cases import (
    LOADED,
    MODEL,
    ROOT,
    SLOW,
    Case,
    builders,
    child_env,
    default_sigint,
    extra_cases,
    prepare,
    python,
    real_model,
    tbt,
)
from bench.bad_input_safety import EXTRA, safety_cases
from bench.common import meta, write_json


# ---------------------------------------------------------------------------------------------------------------
def execute(case: Case, d: Path, limit: float) -> tuple[int | None, str, float]:
    t0 = time.time()
    cmd = [sys.executable, *case.argv] if case.raw else python() + real_model(case.argv, d)
    p = subprocess.Popen(cmd, cwd=d, env=child_env(case.env), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=default_sigint)
    try:
        if case.interrupt:
            err = interrupt_when_loaded(p, limit, signal.SIGINT if case.interrupt is True else case.interrupt)
        else:
            _, err = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        _, err = p.communicate()
        return None, err, time.time() - t0
    return p.returncode, err, time.time() - t0


def interrupt_when_loaded(p: subprocess.Popen, limit: float, sig=signal.SIGINT) -> str:
    """SIGINT (or `sig`) a few seconds after the model has loaded (the run is then collecting or generating); stderr."""
    import threading
    seen, lines = threading.Event(), []

    def read():
        for line in p.stderr:
            lines.append(line)
            if LOADED in line:
                seen.set()
    t = threading.Thread(target=read, daemon=True)
    t.start()
    if seen.wait(limit):
        time.sleep(3)
        p.send_signal(sig)
    p.wait(timeout=limit)
    t.join(5)
    return "".join(lines)


def changed(before: dict) -> list[str]:
    """The kept files whose bytes differ now (or that are gone)."""
    return [p.name for p, b in before.items() if not p.exists() or p.read_bytes() != b]


def classify(row: dict | None, case: Case, rc, err: str, d: Path, before: dict | None = None) -> dict:
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("corrsteer: error: ")]
    noise = [ln for ln in lines if not ln.startswith(("corrsteer:", "usage: corrsteer", LOADED))]
    try:
        ok, why = case.check() if case.check and rc is not None else (True, "")
    except Exception as e:                      # a check that fails to run is a failed check, not a lost walk
        ok, why = False, f"the check failed: {type(e).__name__}: {e}"
    if case.log and case.log not in err:
        ok, why = False, f"no line with {case.log!r}"
    lost = changed(before or {})
    if lost:
        ok, why = False, f"destroyed: {', '.join(lost)}"
    if rc is None:
        verdict = "hang"
    elif lost:
        verdict = "destroyed"
    elif "Traceback" in err:
        verdict = "traceback"
    elif rc != case.code:
        verdict = "silent" if rc == 0 else "wrong-exit"
    elif case.code > 0 and (len(errors) != 1 or lines[-1] != errors[0]):
        verdict = "multi-line"
    elif not ok:
        verdict = "silent"
    else:
        verdict = "ok"
    line = errors[-1][len("corrsteer: error: "):] if errors else None
    pattern = tbt.cell_pattern(row["message"]) if row else None
    return dict(
        verdict=verdict, exit=rc, expected_exit=case.code, line=line and line.replace(str(d), "D"),
        check=why or None, model_loaded=LOADED in err,
        late=bool(row and row["when"] == "before the model" and LOADED in err and not case.past_model),
        readme_match=None if not (pattern and line) else bool(pattern.fullmatch(line.replace(str(d), "D"))),
        other_stderr_lines=len(noise), first_other_line=noise[0][:200] if noise else None, note=case.note or None)


def walk(ids: list[str] | None, limit: float, root: Path) -> list[dict]:
    rows = {r["id"]: r for r in tbt.table_rows(tbt.TABLE.read_text(encoding="utf-8"))}
    cache = root / "cache"                                    # SAEs never trained into the user's cache
    (cache).mkdir()
    real_models = Path(os.environ.get("CORRSTEER_CACHE", Path.home() / ".cache" / "corrsteer")) / "models"
    if real_models.exists():
        (cache / "models").symlink_to(real_models)            # the converted default model, read only here
    os.environ["CORRSTEER_CACHE"] = str(cache)
    names = list(rows) + list(extra_cases(root)) + list(EXTRA)
    results = []
    for rid in names:
        if ids and rid not in ids:
            continue
        d = prepare(root / rid)
        build = {**builders(d), **safety_cases(d)}.get(rid)
        try:
            case = build() if build else None
        except Exception as e:                  # a walk bug, not the CLI's: the row is counted as not run
            case, build = None, f"building the case failed: {type(e).__name__}: {e}"
        if case is None:
            note = "no case" if build is None else build if isinstance(build, str) else "needs root (mount)"
            results.append(dict(id=rid, verdict="not-run", note=note))
            print(f"{rid:32s} not run: {note}", flush=True)
            continue
        before = {p: p.read_bytes() for p in case.keep if p.exists()}
        rc, err, secs = execute(case, d, case.limit or limit)
        res = dict(id=rid, input=rows[rid]["input"] if rid in rows else "issue 29", when=rows.get(rid, {}).get("when"),
                   argv=" ".join(real_model(case.argv, d)).replace(str(d), "D")[:300], seconds=round(secs, 1),
                   **classify(rows.get(rid), case, rc, err, d, before))
        if res["verdict"] != "ok":
            res["stderr_tail"] = err.replace(str(d), "D")[-1500:]
        print(f"{rid:32s} {res['verdict']:10s} exit {rc} {secs:6.1f}s  {res['line'] or ''}"[:220], flush=True)
        results.append(res)
        unmount(d)
    return results


def unmount(d: Path) -> None:
    if (d / "tmpfs").is_mount():
        subprocess.run(["umount", str(d / "tmpfs")], capture_output=True)


VERDICTS = dict(ok="ok", destroyed="destroyed", tracebacks="traceback", silent_wrong_results="silent", hangs="hang",
                wrong_exit="wrong-exit",
                multi_line="multi-line")


def counts(results: list[dict]) -> dict:
    run = [r for r in results if r["verdict"] != "not-run"]
    by = {k: sum(r["verdict"] == v for r in run) for k, v in VERDICTS.items()}
    return dict(cases=len(results), run=len(run), **by, late=sum(bool(r.get("late")) for r in run),
                readme_mismatch=sum(r.get("readme_match") is False for r in run), not_run=len(results) - len(run))


COLUMNS = ("cases", "run", "ok", "destroyed", "tracebacks", "silent_wrong_results", "hangs", "wrong_exit",
           "multi_line", "late", "readme_mismatch", "not_run")
LEGEND = ("late: a \"before the model\" row that loaded the model. README cell: whether the line matches the row's "
          "message cell, which is written for the tests' tiny model (widths, layer counts, context sizes and the "
          "model's name differ on the default model).")


def write_md(path: Path, info: dict, c: dict, results: list[dict]) -> None:
    out = [f"# Bad-input walk-through ({info['date']}, {info['device']}, commit {info['git_commit']})", "",
           f"`{info['command']}`: every row of docs/bad-input.md and the issue's own cases as real `python -m "
           f"corrsteer` processes with the default model ({MODEL}), {info['timeout_s']:.0f} s a row "
           f"({SLOW} s for the rows that run the model on data).", "",
           "| " + " | ".join(k.replace("_", " ") for k in COLUMNS) + " |", "|" + "---:|" * len(COLUMNS),
           "| " + " | ".join(str(c[k]) for k in COLUMNS) + " |", "", LEGEND, "",
           "| id | verdict | exit | s | README cell | line (D the case's folder) or note |",
           "|---|---|---:|---:|---|---|"]
    marks = {True: "=", False: "differs", None: ""}
    for r in results:
        line = (r.get("line") or r.get("note") or "").replace("|", "\\|")
        out.append(f"| `{r['id']}` | {r['verdict']} | {r.get('exit', '')} | {r.get('seconds', '')} | "
                   f"{marks[r.get('readme_match')]} | {line[:160]} |")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated row ids")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds a row may run before it counts as a hang")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    ids = [i for i in args.only.split(",") if i] or None
    with tempfile.TemporaryDirectory(prefix="corrsteer-walk-") as tmp:
        results = walk(ids, args.timeout, Path(tmp))
    c = counts(results)
    args.device, args.dtype_name, args.quick = "cpu", "fp32", False
    name = "bad-input-walk" + ("-partial" if ids else "")
    command = "OMP_NUM_THREADS=1 nice python -m bench.bad_input_walk" + (f" --only {args.only}" if ids else "")
    info = dict(command=command,
                timeout_s=args.timeout, slow_timeout_s=SLOW, model=MODEL)
    path = Path(write_json(name, args, dict(info=info, counts=c, results=results)))
    write_md(path.with_suffix(".md"), {**meta(args), **info}, c, results)
    print(json.dumps(c))


if __name__ == "__main__":
    main()
