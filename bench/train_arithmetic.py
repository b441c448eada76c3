"""What the training arithmetic costs: one TopKTrainer step (the default shape: 1024 tokens, 576 -> 2304, k 32) in
float32 (the default since training banks the same on every CPU) and in bfloat16 GEMMs (`--matmul-dtype bfloat16`).

Steps run interleaved (fp32, bf16, fp32, ...) on the same random rows after warm-up, so load from other processes
hits both alike; CPU seconds (process time) are given beside wall time, and the per-layer estimate is steps x the
default number of steps per layer (epochs x train tokens / batch). --fit also trains one layer's SAE on planted
data both ways and gives its held-out FVE (the arithmetic's effect on quality). --activations DIR (a folder
`train-sae --keep-activations` kept) --layers L,...: each layer's SAE trained from the same real activations in
float32 (seed 0), bfloat16 (seed 0) and float32 (seed 1): held-out FVE on the task prompts and the share of one
SAE's latents whose decoder direction has a cosine >= 0.9 match in the other's (how far the arithmetic alone moves
a bank, beside how far another seed does).

    python3 -m bench.train_arithmetic [--reps 7] [--threads 2] [--fit] [--activations DIR --layers 1,17]
"""
from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import torch

from bench.common import base_parser, finish_args, print_table, write_json
from corrsteer.config import TrainConfig
from corrsteer.sae.train import TopKTrainer, bf16_native, sae_quality

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


def _matched(a, b) -> float:
    wa, wb = (torch.nn.functional.normalize(s.W_dec.double(), dim=1) for s in (a, b))
    return float(((wa @ wb.T).max(dim=1).values >= 0.9).double().mean())


def real_layers(folder, layers: list[int], threads: int) -> list[dict]:
    """Per layer: fp32 seed 0, bf16 seed 0 and fp32 seed 1 SAEs from the same kept activations."""
    from corrsteer.model.hooks import HookPoint
    from corrsteer.sae.activations import load_layer
    out = []
    for L in layers:
        hp = HookPoint(L, "post")
        x = load_layer(Path(folder) / "train", hp, 576)
        chat = load_layer(Path(folder) / "eval_chat", hp, 576)
        saes, row = {}, dict(layer=L)
        for name, arith, seed in (("fp32", "float32", 0), ("bf16", "bfloat16", 0), ("fp32_seed1", "float32", 1)):
            t0 = time.process_time()
            saes[name] = TopKTrainer(x, TrainConfig(matmul_dtype=arith, seed=seed, threads=threads)).fit(
                x, progress=False).weights()
            row[name] = dict(sae_quality(saes[name], chat), cpu_s=time.process_time() - t0)
        row["matched_bf16_vs_fp32"] = _matched(saes["bf16"], saes["fp32"])
        row["matched_seed1_vs_seed0"] = _matched(saes["fp32_seed1"], saes["fp32"])
        out.append(row)
        print(f"layer {L}: FVE fp32 {row['fp32']['fve']:.4f} bf16 {row['bf16']['fve']:.4f} seed1 "
              f"{row['fp32_seed1']['fve']:.4f}; matched bf16/fp32 {row['matched_bf16_vs_fp32']:.3f}, seed1/seed0 "
              f"{row['matched_seed1_vs_seed0']:.3f}", flush=True)
    return out


def main():
    ap = base_parser(__doc__)
    ap.add_argument("--reps", type=int, default=7, help="interleaved repetitions")
    ap.add_argument("--steps", type=int, default=5, help="steps per timed repetition")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the trainer's default)")
    ap.add_argument("--fit", action="store_true", help="also train a planted-data SAE both ways (FVE)")
    ap.add_argument("--activations", default=None, help="a folder train-sae --keep-activations kept")
    ap.add_argument("--layers", default="1,17", help="--activations: layers to train three ways")
    args = finish_args(ap.parse_args())
    torch.set_num_threads(args.threads)
    d = TrainConfig()
    cfg = dict(d_sae=d.d_sae, k=d.k, batch_size=d.batch_size, seed=args.seed)
    if args.quick:
        cfg.update(d_sae=96, batch_size=128)
    g = torch.Generator().manual_seed(args.seed)
    d_in = 64 if args.quick else 576
    x = torch.randn(max(4 * cfg["batch_size"], cfg["d_sae"]), d_in, generator=g)
    if args.activations:                 # the real-layer comparison alone
        layers = [int(v) for v in args.layers.split(",")]
        write_json("train-arithmetic-layers", args, dict(layers=real_layers(args.activations, layers, args.threads)))
        return
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
            payload["fit"][a] = dict(sae_quality(sae, held), cpu_s=time.process_time() - t0)
    print_table(rows, [("arithmetic", "arithmetic", ""), ("wall_ms", "wall ms/step", ".1f"),
                       ("cpu_ms", "CPU ms/step", ".1f"), ("layer_cpu_s", "CPU s/layer", ".1f")])
    print("fp32 / bf16 CPU time per step:", payload["fp32_over_bf16_cpu"])
    write_json("train-arithmetic", args, payload)


if __name__ == "__main__":
    main()
