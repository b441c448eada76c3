"""What the training arithmetic costs: one TopKTrainer step (the default shape: 1024 tokens, 576 -> 2304, k 32) in
float32 (the default since training banks the same on every CPU) and in bfloat16 GEMMs (`--matmul-dtype bfloat16`).

Steps run interleaved (fp32, bf16, fp32, ...) on the same random rows after warm-up, so load from other processes
hits both alike; CPU seconds (process time) are given beside wall time, and the per-layer estimate is steps x the
default number of steps per layer (epochs x train tokens / batch). --fit also trains one layer's SAE on planted
data both ways and gives its held-out FVE (the arithmetic's effect on quality).

    python3 -m bench.train_arithmetic [--reps 7] [--threads 2] [--fit]
"""
from __future__ import annotations

import math
import statistics
import time

import torch

from bench.common import base_parser, finish_args, print_table, write_json
from corrsteer.config import TrainConfig
from corrsteer.sae.train import TopKTrainer, bf16_native, evaluate

ARITH = ("float32", "bfloat16")


def _step_times(x, cfg, reps: int, steps: int) -> dict:
    trainers = {a: TopKTrainer(x, TrainConfig(**{**cfg, "matmul_dtype": a})) for a in ARITH}
    xb = trainers["float32"].normalise(x[:cfg["batch_size"]])
    for t in trainers.values():
        for _ in range(3):
            t.step(xb)
    out = {a: dict(wall_ms=[], cpu_ms=[]) for a in ARITH}
    for _ in range(reps):
        for a, t in trainers.items():
            w, c = time.perf_counter(), time.process_time()
            for _ in range(steps):
                t.step(xb)
            out[a]["wall_ms"].append(1e3 * (time.perf_counter() - w) / steps)
            out[a]["cpu_ms"].append(1e3 * (time.process_time() - c) / steps)
    return out


def _planted(n, d, n_feat, k, g):
    dirs = torch.nn.functional.normalize(torch.randn(n_feat, d, generator=g), dim=1)
    idx = torch.rand(n, n_feat, generator=g).topk(k, dim=1).indices
    vals = torch.rand(n, k, generator=g) * 3
    return torch.einsum("nk,nkd->nd", vals, dirs[idx]) + 0.05 * torch.randn(n, d, generator=g)


def main():
    ap = base_parser(__doc__)
    ap.add_argument("--reps", type=int, default=7, help="interleaved repetitions")
    ap.add_argument("--steps", type=int, default=5, help="steps per timed repetition")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the trainer's default)")
    ap.add_argument("--fit", action="store_true", help="also train a planted-data SAE both ways (FVE)")
    args = finish_args(ap.parse_args())
    torch.set_num_threads(args.threads)
    d = TrainConfig()
    cfg = dict(d_sae=d.d_sae, k=d.k, batch_size=d.batch_size, seed=args.seed)
    if args.quick:
        cfg.update(d_sae=96, batch_size=128)
    g = torch.Generator().manual_seed(args.seed)
    d_in = 64 if args.quick else 576
    x = torch.randn(max(4 * cfg["batch_size"], cfg["d_sae"]), d_in, generator=g)
    times = _step_times(x, cfg, 2 if args.quick else args.reps, 1 if args.quick else args.steps)
    steps_per_layer = math.ceil(d.epochs * d.train_tokens / d.batch_size)
    rows = []
    for a in ARITH:
        med = statistics.median(times[a]["cpu_ms"])
        rows.append(dict(arithmetic=a, wall_ms=statistics.median(times[a]["wall_ms"]), cpu_ms=med,
                         layer_cpu_s=med * steps_per_layer / 1e3))
    ratio = [f / b for f, b in zip(times["float32"]["cpu_ms"], times["bfloat16"]["cpu_ms"])]
    payload = dict(shape=dict(tokens=cfg["batch_size"], d_in=d_in, **cfg), steps_per_layer=steps_per_layer,
                   bf16_native=bf16_native(), times=times, rows=rows,
                   fp32_over_bf16_cpu=dict(median=statistics.median(ratio), min=min(ratio), max=max(ratio)))
    if args.fit:
        x = _planted(8000 if args.quick else 40000, d_in, 4 * cfg["d_sae"] // 3, 8, g)
        held = _planted(2000, d_in, 4 * cfg["d_sae"] // 3, 8, torch.Generator().manual_seed(args.seed + 7))
        payload["fit"] = {}
        for a in ARITH:
            t0 = time.process_time()
            sae = TopKTrainer(x, TrainConfig(**{**cfg, "matmul_dtype": a})).fit_from_raw(progress=False).weights()
            payload["fit"][a] = dict(evaluate(sae, held), cpu_s=time.process_time() - t0)
    print_table(rows, [("arithmetic", "arithmetic", ""), ("wall_ms", "wall ms/step", ".1f"),
                       ("cpu_ms", "CPU ms/step", ".1f"), ("layer_cpu_s", "CPU s/layer", ".1f")])
    print("fp32 / bf16 CPU time per step:", payload["fp32_over_bf16_cpu"])
    write_json("train-arithmetic", args, payload)


if __name__ == "__main__":
    main()
