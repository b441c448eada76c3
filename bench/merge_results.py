"""Merge the newest smoke/k1/e2/e1 JSON files of a folder into one gpu-<device>-<date>.json (bench/gpu.sh runs it
after every step, so a step that dies or times out leaves every earlier figure plus its own error in the file).

    python3 -m bench.merge_results DIR [--steps name=rc ...] [--pytest "summary line"] [--step-logs DIR]

--steps: each finished step's exit status (124: timed out; "skipped": no budget left); --step-logs: the folder of
gpu.sh's .step-NAME.txt outputs, whose last lines go into step_errors for every step that did not exit 0.
"""
from __future__ import annotations

import argparse
import glob
import json
import os

NAMES = ("smoke", "k1", "e2", "e1")
TAIL_LINES = 25


def newest(folder: str) -> dict:
    merged = {}
    for name in NAMES:
        files = sorted(glob.glob(os.path.join(folder, f"{name}-*.json")), key=os.path.getmtime)
        if files:
            try:
                with open(files[-1]) as f:
                    merged[name] = json.load(f)
            except (OSError, ValueError) as e:       # a file cut off mid-write: say so, keep the others
                merged[name] = dict(error=f"unreadable {os.path.basename(files[-1])}: {e}")
    return merged


def fallback_meta() -> dict:
    import datetime as dt

    import torch

    from bench.common import device_name, device_slug
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return dict(device=device_name(dev), device_kind=device_slug(dev), date=dt.date.today().isoformat())


def brief(merged: dict) -> dict:
    out = {}
    smoke = merged.get("smoke") or {}
    if "families" in smoke:
        out["kernels_switched_off"] = {f: v.get("error") for f, v in smoke["families"].items()
                                       if v.get("ok") is False}
        out["kernels_no_smoke_verdict"] = [f for f, v in smoke["families"].items() if v.get("ok") is None]
    k1 = merged.get("k1") or {}
    if "summary" in k1:
        out["k1_worst_fused_over_gemm"] = k1["summary"].get("worst_fused_over_gemm")
        out["k1_all_pass"] = k1["summary"].get("all_pass")
        out["k1_failed_cases"] = k1["summary"].get("failed_cases")
        out["k1_strategies"] = k1["summary"].get("strategies")
        out["k1_errors"] = k1["summary"].get("errors")
        out["k1_layout"] = k1.get("layout")
        out["gemm_ceiling_tflops"] = (k1.get("gemm_ceiling") or {}).get("tflops")
    e2 = merged.get("e2") or {}
    if e2:
        out["e2_collect_over_plain"] = e2.get("collect_over_plain")
        out["e2_collect_over_hf"] = e2.get("collect_over_hf")
        out["e2_syncs_per_step"] = (e2.get("syncs") or {}).get("per_step_collect")
        out["e2_memory_ratio"] = (e2.get("memory") or {}).get("ratio_hi_over_lo")
    if merged.get("e1"):
        out["e1_ratio"] = merged["e1"].get("ratio")
    return out


def step_errors(steps: dict, logs: str | None) -> dict:
    out = {}
    for name, rc in steps.items():
        if rc == "0" or not logs:
            continue
        path = os.path.join(logs, f".step-{name}.txt")
        tail = open(path, errors="replace").read().splitlines()[-TAIL_LINES:] if os.path.exists(path) else []
        out[name] = dict(exit=rc, timed_out=rc in ("124", "137"), tail=tail)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--steps", nargs="*", default=[], help="name=exit status of each gpu.sh step")
    ap.add_argument("--pytest", default="", help="pytest's summary line")
    ap.add_argument("--prefix", default="gpu", help="the merged file's name: <prefix>-<device>-<date>.json")
    ap.add_argument("--step-logs", default=None, help="folder of the steps' .step-NAME.txt outputs")
    ap.add_argument("--quiet", action="store_true", help="print only the file's name")
    ap.add_argument("--meta-file", default=None, help="meta JSON to use when no step wrote one (gpu.sh's)")
    args = ap.parse_args()
    merged = newest(args.dir)
    meta = next((d["meta"] for d in merged.values() if isinstance(d.get("meta"), dict)), None)
    if meta is None and args.meta_file and os.path.exists(args.meta_file):
        meta = json.load(open(args.meta_file))
    meta = meta or fallback_meta()
    steps = dict(s.split("=", 1) for s in args.steps)
    summary = brief(merged)
    out = os.path.join(args.dir, f"{args.prefix}-{meta['device_kind']}-{meta['date']}.json")
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dict(meta=meta, steps=steps, step_errors=step_errors(steps, args.step_logs), pytest=args.pytest,
                       summary=summary, **merged), f, indent=1, default=str)
    os.replace(tmp, out)               # never a half-written merged file
    print("wrote", out)
    if not args.quiet:
        for k, v in summary.items():
            print(f"  {k:28s} {v}")


if __name__ == "__main__":
    main()
