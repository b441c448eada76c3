"""Merge the newest k1/e2/e1 JSON files of a folder into one gpu-<device>-<date>.json (used by bench/gpu.sh).

    python3 -m bench.merge_results DIR [--steps name=rc ...] [--pytest "summary line"]
"""
from __future__ import annotations

import argparse
import glob
import json
import os


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--steps", nargs="*", default=[], help="name=exit status of each gpu.sh step")
    ap.add_argument("--pytest", default="")
    ap.add_argument("--prefix", default="gpu")
    args = ap.parse_args()
    merged, meta = {}, None
    for name in ("k1", "e2", "e1"):
        files = sorted(glob.glob(os.path.join(args.dir, f"{name}-*.json")), key=os.path.getmtime)
        if files:
            with open(files[-1]) as f:
                d = json.load(f)
            meta = meta or d.get("meta")
            merged[name] = d
    if meta is None:
        import datetime as dt

        import torch

        from bench.common import device_name, device_slug
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        meta = dict(device=device_name(dev), device_kind=device_slug(dev), date=dt.date.today().isoformat())
    steps = dict(s.split("=", 1) for s in args.steps)
    brief = {}
    if "k1" in merged:
        brief["k1_worst_fused_over_gemm"] = merged["k1"]["summary"]["worst_fused_over_gemm"]
        brief["k1_all_pass"] = merged["k1"]["summary"]["all_pass"]
        brief["k1_layout"] = merged["k1"].get("layout")
        brief["gemm_ceiling_tflops"] = merged["k1"]["gemm_ceiling"]["tflops"]
    if "e2" in merged:
        e2 = merged["e2"]
        brief["e2_collect_over_plain"] = e2.get("collect_over_plain")
        brief["e2_collect_over_hf"] = e2.get("collect_over_hf")
        brief["e2_syncs_per_step"] = (e2.get("syncs") or {}).get("per_step_collect")
        brief["e2_memory_ratio"] = (e2.get("memory") or {}).get("ratio_hi_over_lo")
    if "e1" in merged:
        brief["e1_ratio"] = merged["e1"].get("ratio")
    out = os.path.join(args.dir, f"{args.prefix}-{meta['device_kind']}-{meta['date']}.json")
    with open(out, "w") as f:
        json.dump(dict(meta=meta, steps=steps, pytest=args.pytest, summary=brief, **merged), f, indent=1,
                  default=str)
    print("wrote", out)
    for k, v in brief.items():
        print(f"  {k:28s} {v}")


if __name__ == "__main__":
    main()
