"""Kernel microbenchmark: fused encode -> pool -> stats vs a bare GEMM of the same shape and vs the unfused pipeline.

    python bench/bench_kernels.py                 # CPU: torch path, 4096 tokens x 576 -> 16384 JumpReLU, fp32
    python bench/bench_kernels.py --device cuda   # GPU: Triton kernels, bf16, plus larger shapes

Prints a table and writes bench/results/<device>-<date>.json. Ratios are taken within one run (machines are noisy).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from corrsteer_kernels import CorrStats, SAEWeights, encode_pool, encode_pool_stats  # noqa: E402


def timer(fn, device, reps):
    if device == "cuda":
        from triton.testing import do_bench
        return do_bench(fn, warmup=25, rep=200) / 1e3
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make(B, T, d_in, d_sae, dtype, device, activation="jumprelu", k=64):
    g = torch.Generator().manual_seed(0)
    sae = SAEWeights(W_enc=(torch.randn(d_in, d_sae, generator=g) / d_in ** 0.5).to(dtype),
                     b_enc=-0.5 + 0.1 * torch.randn(d_sae, generator=g), b_dec=0.1 * torch.randn(d_in, generator=g),
                     threshold=0.5 * torch.rand(d_sae, generator=g) if activation == "jumprelu" else None,
                     k=k if activation == "topk" else None, activation=activation).to(device)
    x = torch.randn(B, T, d_in, generator=g).to(dtype).to(device)
    lengths = torch.full((B,), T, dtype=torch.long, device=device)
    y = (torch.rand(B, generator=g) > 0.5).float().to(device)
    return x, lengths, y, sae


def unfused(x, lengths, y, sae, stats):
    """Encode everything ([B*T, d_sae] materialised), then pool, then update: what the fused op avoids."""
    B, T, d = x.shape
    pre = (x.reshape(-1, d).to(sae.W_enc.dtype) - sae.b_dec.to(sae.W_enc.dtype)) @ sae.W_enc + sae.b_enc.to(sae.W_enc.dtype)
    if sae.activation == "jumprelu":
        acts = pre.relu() * (pre > sae.threshold.to(pre.dtype))
    elif sae.activation == "topk":
        top = pre.topk(sae.k, dim=-1)
        acts = torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu())
    else:
        acts = pre.relu()
    valid = (torch.arange(T, device=x.device)[None, :] < lengths[:, None]).reshape(-1, 1)
    pooled = (acts * valid).reshape(B, T, -1).amax(1)
    stats.update(pooled, y)


def run_case(B, T, d_in, d_sae, dtype, device, activation, reps):
    x, lengths, y, sae = make(B, T, d_in, d_sae, dtype, device, activation)
    backend = "triton" if device == "cuda" else "torch"
    xf = x.reshape(-1, d_in)
    W = sae.W_enc
    res = dict(B=B, T=T, tokens=B * T, d_in=d_in, d_sae=d_sae, dtype=str(dtype).replace("torch.", ""),
               activation=activation, backend=backend)
    res["gemm_s"] = timer(lambda: torch.mm(xf, W), device, reps)
    res["fused_s"] = timer(lambda: encode_pool_stats(x, lengths, y, sae, CorrStats(d_sae, device=device),
                                                     backend=backend), device, reps)
    res["encode_pool_s"] = timer(lambda: encode_pool(x, lengths, sae, backend=backend), device, reps)
    try:
        res["unfused_s"] = timer(lambda: unfused(x, lengths, y, sae, CorrStats(d_sae, device=device)), device, reps)
    except torch.OutOfMemoryError:
        res["unfused_s"] = None
    res["fused_over_gemm"] = res["fused_s"] / res["gemm_s"]
    res["unfused_over_fused"] = res["unfused_s"] / res["fused_s"] if res["unfused_s"] else None
    res["fused_tflops"] = 2 * B * T * d_in * d_sae / res["fused_s"] / 1e12
    return res


def device_name(device):
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cpus, {torch.get_num_threads()} threads)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/<device>-<date>.json)")
    args = ap.parse_args()
    if args.device == "cpu":
        cases = [(64, 64, 576, 16384, torch.float32, "jumprelu")]
    else:
        cases = [(64, 64, 576, 16384, torch.bfloat16, "jumprelu"),
                 (64, 64, 576, 16384, torch.float32, "jumprelu"),
                 (64, 64, 576, 16384, torch.bfloat16, "topk"),
                 (256, 64, 2304, 65536, torch.bfloat16, "jumprelu"),
                 (64, 64, 2304, 1 << 20, torch.bfloat16, "jumprelu")]
    results = []
    for B, T, d_in, d_sae, dtype, act in cases:
        r = run_case(B, T, d_in, d_sae, dtype, args.device, act, args.reps)
        results.append(r)
        uf = f"{r['unfused_over_fused']:.2f}x" if r["unfused_over_fused"] else "OOM"
        print(f"{B*T:>6} tok x {d_in} -> {d_sae:>7} {r['dtype']:>8} {act:>8}: gemm {r['gemm_s']*1e3:8.2f} ms | "
              f"fused {r['fused_s']*1e3:8.2f} ms ({r['fused_over_gemm']:.2f}x gemm) | "
              f"encode_pool {r['encode_pool_s']*1e3:8.2f} ms | unfused/fused {uf}", flush=True)
    meta = dict(device=device_name(args.device), date=dt.date.today().isoformat(), torch=torch.__version__,
                python=platform.python_version())
    try:
        import triton
        meta["triton"] = triton.__version__
    except ImportError:
        pass
    out = args.out or os.path.join(os.path.dirname(__file__), "results",
                                   f"kernels-{args.device}-{meta['date']}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(dict(meta=meta, results=results), f, indent=2)
    print("wrote", out)


if __name__ == "__main__":
    main()
