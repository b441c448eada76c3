"""The fail-soft proof of bench/gpu.sh (opt-in, minutes): run it once per injected fault (CORRSTEER_FAULT) and check
that its merged JSON still holds every figure the fault does not touch.

    python3 -m bench.fault_runs [--faults packed:abort,split:raise,...] [--order "smoke k1"] [--k1-args "..."]

Per run: the family's smoke verdict is a failure with its error and it alone is switched off; K1 has every case
and every strategy entry that does not force the family (those are skipped or carry their error); the steps named
in --order all ran; the run ended inside gpu.sh's budget. Without --order's smoke step (e.g. --order k1) the fault
meets the kernels' own fail-soft choice instead. Writes results/fault-runs-<device>-<date>.json (per run: the
fault, seconds, steps, what was switched off and why, which figures are present) and prints a table.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import time

from bench.common import ROOT, base_parser, finish_args, write_json
from bench.k1_cases import STRATEGIES

DEFAULT_FAULTS = "packed:abort,split:raise,tokens_n:kill,topk:abort,combine:raise"


def check(fault: str, merged: dict, order: list[str]) -> dict:
    """What the merged JSON kept after a run with this fault, and whether that is everything it should keep."""
    fam = fault.split(":")[0]
    fam = {"fused": "packed", "fused_n": "tokens_n", "one_pass": "topk"}.get(fam, fam)
    out, problems = {}, []
    if "smoke" in order:
        fams = (merged.get("smoke") or {}).get("families", {})
        off = sorted(f for f, v in fams.items() if v.get("ok") is False)
        out["smoke_off"] = {f: fams[f].get("error") for f in off}
        out["smoke_no_verdict"] = sorted(f for f, v in fams.items() if v.get("ok") is None)
        if off != [fam]:
            problems.append(f"smoke switched off {off}, expected [{fam}]")
    if "k1" in order:
        k1 = merged.get("k1") or {}
        strat = {s["strategy"]: s for s in k1.get("strategies", [])}
        out["k1_cases"] = len(k1.get("cases", []))
        out["k1_main_errors"] = [e for e in k1.get("errors", []) if e.get("group") == "main"]
        out["k1_strategies"] = {n: ("figure" if "fused_over_gemm" in s else s.get("skipped") or s.get("error"))
                                for n, s in strat.items()}
        out["k1_switched_off"] = {g: (st or {}).get("switched_off") for g, st in k1.get("kernel_state", {}).items()}
        if out["k1_main_errors"] or not out["k1_cases"]:
            problems.append("K1's main cases lost figures")
        for name, _, forced, _, _ in STRATEGIES:
            s = strat.get(name)
            if s is None:
                problems.append(f"K1 strategy {name} missing")
            elif forced != fam and "fused_over_gemm" not in s:
                problems.append(f"K1 strategy {name} has no figure: {s.get('skipped') or s.get('error')}")
    steps = merged.get("steps", {})
    out["steps"] = steps
    problems += [f"step {s} missing" for s in order if s not in steps]
    out["problems"] = problems
    out["ok"] = not problems
    return out


def run_one(fault: str, order: str, k1_args: str, budget: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, OUT=out, ORDER=order, CORRSTEER_FAULT=fault, K1_ARGS=k1_args, BUDGET=str(budget))
        t0 = time.monotonic()
        p = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu.sh")], env=env, capture_output=True, text=True)
        seconds = time.monotonic() - t0
        files = glob.glob(os.path.join(out, "results", "gpu-*.json"))
        merged = json.load(open(files[0])) if files else {}
    r = dict(fault=fault, order=order, seconds=round(seconds, 1), exit=p.returncode, within_budget=seconds <= budget,
             merged_json=bool(files), **check(fault, merged, order.split()))
    if not files:
        r["ok"] = False
        r["tail"] = p.stdout[-2000:]
    return r


def main() -> int:
    ap = base_parser(__doc__)
    ap.add_argument("--faults", default=DEFAULT_FAULTS, help="comma list of CORRSTEER_FAULT values, one run each")
    ap.add_argument("--order", default="smoke k1", help="gpu.sh's ORDER for these runs")
    ap.add_argument("--k1-args", default="--only topk --reps 3", help="extra bench_k1 arguments (gpu.sh's K1_ARGS)")
    ap.add_argument("--budget", type=int, default=540, help="gpu.sh's BUDGET")
    args = finish_args(ap.parse_args())
    runs = []
    for fault in args.faults.split(","):
        r = run_one(fault, args.order, args.k1_args, args.budget)
        runs.append(r)
        print(f"{fault:>16}: {'OK ' if r['ok'] else 'BAD'} {r['seconds']:6.1f}s exit {r['exit']} steps {r['steps']} "
              f"off {list(r.get('smoke_off', {}))} problems {r['problems']}", flush=True)
        write_json("fault-runs", args, dict(benchmark="bench/gpu.sh with one kernel family made to fail per run",
                                            order=args.order, k1_args=args.k1_args, runs=runs), quiet=True)
    print("all ok" if all(r["ok"] for r in runs) else "SOME RUNS LOST FIGURES")
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
