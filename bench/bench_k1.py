"""K1: fused encode -> pool -> stats on packed tokens / a bare GEMM of the same packed tokens.

    python3 -m bench.bench_k1                      # cuda when available (bf16, ~8k tokens), else cpu (fp32, small)
    python3 -m bench.bench_k1 --device cpu --quick # seconds: checks every code path
    python3 -m bench.bench_k1 --layout padded      # x as [B, T, d_in] (the GEMM still covers only the valid tokens)

Per case (SAE shape, activation, pool, token pattern), all timed in one run on the same inputs:
  fused       = encode_pool_stats(x, lengths, y, sae, stats, pool, check=False)   (as collection calls it: no host
                sync; stats preallocated, accumulating); fused_checked = the same with the default input checks
  encode_pool = encode_pool(x, lengths, sae, pool, out=buf)           (pooled output preallocated)
  gemm        = torch.mm(xp, W_enc, out=buf)  xp = the N valid tokens packed [N, d_in], same dtype as W_enc
ratio = fused / gemm (target <= 1.2 on GPU bf16, <= 1.25 on CPU fp32, TopK <= 1.5 on the CPU). Paired: each of
--reps repetitions times the GEMM and then each op back to back (CPU: one call each; GPU: a short do_bench each) and
the ratio is the median of the per-repetition ratios, with its spread (min, max) and every ratio in the JSON. Also per
case: launches per call of the fused op (torch.profiler: CUDA kernels on the GPU, top-level aten ops on the CPU); on
the GPU the fused op replayed from a CUDA graph beside its plain timing (or why it cannot be captured), the checked
call, and the GEMM rotating over input sets. N = 2048 (what collection passes per layer) and 8192 tokens.
TFLOP/s = 2 N d_in d_sae / time, against an 8192^3 bf16 matmul measured in the same run (CPU: 1024^3 in fp32).
"""
from __future__ import annotations

import sys
import traceback
import zlib

import torch

from bench.common import (
    base_parser,
    finish_args,
    gemm_ceiling,
    graph_time,
    launches_per_call,
    paired,
    print_table,
    random_sae,
    time_op,
    write_json,
)
from corrsteer_kernels import CorrStats, encode_pool, encode_pool_stats
from corrsteer_kernels.launch import MODE_STATS, Segments
from corrsteer_kernels.packed_kernel import config_for, tuned_configs, tuning_times
from corrsteer_kernels.split_kernel import SPLIT_CONFIGS, gemm_fp32, split_encode

SHAPES = {"d576-16k": (576, 16384, "jumprelu", None), "gemma2-2b": (2304, 16384, "jumprelu", None),
          "llama3.1-8b": (4096, 32768, "jumprelu", None),
          "topk-default": (576, 2304, "topk", 32)}
MAX_T = 32                 # ragged pattern: lengths uniform in 1..32


def cases(device, quick):
    """(shape name, activation, pool, pattern, n_tokens). Every activation and pool appears at least once."""
    if quick:
        return [("gemma2-2b", "jumprelu", "max", "ragged", 64), ("gemma2-2b", "relu", "mean", "one", 32),
                ("topk-default", "topk", "max", "ragged", 64), ("topk-default", "topk", "mean", "one", 32)]
    if device != "cuda":
        return cpu_cases()
    out = []
    for n in (2048, 8192):          # 2048: what collection passes per layer; 8192: the earlier K1 size
        out += [("gemma2-2b", "jumprelu", "max", "ragged", n), ("gemma2-2b", "jumprelu", "mean", "ragged", n),
                ("gemma2-2b", "jumprelu", "max", "one", n), ("gemma2-2b", "relu", "max", "ragged", n),
                ("llama3.1-8b", "jumprelu", "max", "ragged", n), ("llama3.1-8b", "jumprelu", "max", "one", n),
                ("topk-default", "topk", "max", "ragged", n), ("topk-default", "topk", "mean", "ragged", n),
                ("topk-default", "topk", "max", "one", n)]
    return out


def cpu_cases():
    """The CPU targets' cases: 576 -> 16384 (the offline default's d_in), Gemma, TopK at N = 2048 and 8192 tokens,
    Llama at N = 512 (one GEMM takes seconds on 2 cores)."""
    out = []
    for n in (2048, 8192):
        for shape in ("d576-16k", "gemma2-2b"):
            if shape == "gemma2-2b" and n == 8192:
                continue
            out += [(shape, "jumprelu", "max", "ragged", n), (shape, "jumprelu", "mean", "ragged", n),
                    (shape, "jumprelu", "max", "one", n), (shape, "relu", "mean", "ragged", n)]
        out += [("topk-default", "topk", "max", "ragged", n), ("topk-default", "topk", "mean", "ragged", n),
                ("topk-default", "topk", "max", "one", n)]
    return out + [("llama3.1-8b", "jumprelu", "max", "ragged", 512), ("llama3.1-8b", "jumprelu", "max", "one", 512)]


def draw_lengths(pattern, n_tokens, g):
    if pattern == "one":
        return torch.ones(n_tokens, dtype=torch.long)
    B = max(1, round(n_tokens / ((1 + MAX_T) / 2)))
    return torch.randint(1, MAX_T + 1, (B,), generator=g)


def make_inputs(lengths, d_in, dtype, device, layout, g):
    """(x in the benchmarked layout, xp packed [N, d_in]): random normal tokens, padding rows random too."""
    N, B = int(lengths.sum()), lengths.numel()
    xp = torch.randn(N, d_in, generator=g).to(dtype)
    if layout == "packed":
        return xp.to(device), xp.to(device)
    T = int(lengths.max())
    x = torch.randn(B, T, d_in, generator=g).to(dtype)
    x[torch.arange(T)[None, :] < lengths[:, None]] = xp
    return x.to(device), xp.to(device)


def packed_supported() -> bool:
    """Probe the packed form on the CPU torch path (no Triton compile spent on a probe)."""
    sae = random_sae(16, 32, "relu")
    x, L = torch.randn(5, 16), torch.tensor([2, 3])
    try:
        z = encode_pool(x, L, sae, "max", backend="torch")
        return tuple(z.shape) == (2, 32)
    except Exception as e:            # noqa: BLE001  (the kernels' packed form has not landed: fall back)
        print(f"packed input not supported here ({type(e).__name__}: {e}); using padded [B, T, d_in]")
        return False


def run_case(shape, activation, pool, pattern, n_tokens, args, n_sets, ceiling):
    d_in, d_sae, _, k = SHAPES[shape]
    dev, dtype = args.device, args.torch_dtype
    g = torch.Generator().manual_seed(args.seed + zlib.crc32(f"{shape}{activation}{pool}{pattern}".encode()))
    lengths = draw_lengths(pattern, n_tokens, g)
    N, B = int(lengths.sum()), lengths.numel()
    sae = random_sae(d_in, d_sae, activation, k=k if activation == "topk" else None, device=dev, dtype=dtype,
                     seed=args.seed + 7)
    sets = []
    for _ in range(n_sets):
        x, xp = make_inputs(lengths, d_in, dtype, dev, args.layout, g)
        sets.append((x, xp, (torch.rand(B, generator=g) > 0.5).float().to(dev)))
    L = lengths.to(dev)
    stats = CorrStats(d_sae, device=dev)
    pooled = torch.empty(B, d_sae, device=dev, dtype=torch.float32)
    buf = torch.empty(N, d_sae, device=dev, dtype=sae.W_enc.dtype)
    W = sae.W_enc
    for x, _, y in sets[:1]:          # compile / warm every path once before timing anything
        encode_pool_stats(x, L, y, sae, stats, pool)
        encode_pool(x, L, sae, pool, out=pooled)
    x, xp, y = sets[0]
    fused = lambda: encode_pool_stats(x, L, y, sae, stats, pool, check=False)      # noqa: E731
    ratios, med = paired(lambda: torch.mm(xp, W, out=buf), {
        "fused": fused, "encode_pool": lambda: encode_pool(x, L, sae, pool, out=pooled)}, dev, args.reps)
    t_gemm, t_fused, t_ep = med["gemm"], med["fused"], med["encode_pool"]
    t_checked = float("nan")
    extra = dict(launches=launches_per_call(fused, dev))
    if dev == "cuda":
        t_checked = time_op([lambda x=x, y=y: encode_pool_stats(x, L, y, sae, stats, pool) for x, _, y in sets],
                            dev, args.reps)
        t_graph = graph_time(fused, dev)
        extra.update(fused_graph_s=t_graph, fused_graph_over_gemm=t_graph / t_gemm if isinstance(t_graph, float)
                     else None, gemm_rotating_s=time_op([lambda xp=xp: torch.mm(xp, W, out=buf) for _, xp, _ in sets],
                                                        dev, args.reps))
    flop = 2 * N * d_in * d_sae
    target = 1.2 if dev == "cuda" else 1.25
    r = dict(shape=shape, d_in=d_in, d_sae=d_sae, activation=activation, k=k if activation == "topk" else None,
             pool=pool, pattern=pattern, samples=B, tokens=N, max_len=int(lengths.max()), layout=args.layout,
             x_shape=list(sets[0][0].shape), dtype=str(dtype).replace("torch.", ""), input_sets=n_sets,
             gemm_s=t_gemm, fused_s=t_fused, fused_checked_s=t_checked, encode_pool_s=t_ep,
             fused_over_gemm=ratios["fused"]["median"], encode_pool_over_gemm=ratios["encode_pool"]["median"],
             paired=ratios, **extra,
             threads=torch.get_num_threads(), target=1.5 * target / 1.25 if (activation == "topk" and
                                                                                dev != "cuda") else target,
             gemm_tflops=flop / t_gemm / 1e12, fused_tflops=flop / t_fused / 1e12,
             encode_pool_tflops=flop / t_ep / 1e12)
    r["fused_pct_of_ceiling"] = 100 * r["fused_tflops"] / ceiling if ceiling else None
    r["pass"] = r["fused_over_gemm"] <= r["target"]
    if dev == "cuda" and activation != "topk":
        r["breakdown"] = breakdown(sets[0][1], L, sets[0][2], sae, pool, args.reps, t_gemm)
    return r


def breakdown(xp, L, y, sae, pool, reps, t_gemm):
    """Where the split strategy's time goes (GPU): its fp32-output GEMM alone, its pooling pass alone (a no-op GEMM
    over an uninitialised buffer: same bytes; with its allocations and launch), and one full read of the fp32
    pre-activations by torch (the achievable bandwidth)."""
    N, d = xp.shape[0], sae.d_sae
    cfg = config_for(xp, sae, pool, MODE_STATS, None)          # this shape's tuned choice (cached by the timed calls)
    cfg = cfg if cfg.get("SPLIT") else SPLIT_CONFIGS[0]
    segs, yd = Segments.of(L, N), y.double()
    pre = torch.empty(N, d, dtype=torch.float32, device=xp.device)
    nogemm = lambda x, w, out: out            # noqa: E731
    t32 = time_op(lambda: gemm_fp32(xp, sae.W_enc, pre), "cuda", reps)
    tp32 = time_op(lambda: split_encode(xp, segs, sae, pool, MODE_STATS, yd, None, None, cfg, gemm=nogemm), "cuda",
                   reps)
    tread = time_op(lambda: torch.amax(pre), "cuda", reps)
    gb = N * d * 4 / 1e9
    return dict(config=dict(cfg), gemm_fp32_out_s=t32, gemm_fp32_over_bf16=t32 / t_gemm, pool_kernel_s=tp32,
                pool_kernel_GBps=gb / tp32, torch_read_fp32_s=tread, torch_read_GBps=gb / tread,
                split_floor_over_gemm=(t32 + tp32) / t_gemm)


def save(args, ceil, results, errors, quiet=False):
    ok = bool(results) and not errors and all(r["pass"] for r in results)
    summary = dict(cases=len(results), errors=len(errors), all_pass=ok,
                   worst_fused_over_gemm=max((r["fused_over_gemm"] for r in results), default=None))
    write_json("k1", args, dict(benchmark="K1 fused encode->pool->stats / bare GEMM of the same packed tokens",
                                layout=args.layout, gemm_ceiling=ceil, summary=summary, cases=results,
                                tuned_configs=tuned_configs(), tuning_ms=tuning_times(),
                                errors=errors), quiet=quiet)


def main():
    ap = base_parser(__doc__)
    ap.add_argument("--layout", default="auto", choices=["auto", "packed", "padded"])
    ap.add_argument("--reps", type=int, default=7, help="paired repetitions (GEMM, then each op)")
    ap.add_argument("--only", default=None, help="run only cases whose shape name contains this")
    ap.add_argument("--max-tokens", type=int, default=None, help="skip cases with more tokens than this")
    args = finish_args(ap.parse_args())
    if args.layout == "auto":
        args.layout = "packed" if packed_supported() else "padded"
    ceil = gemm_ceiling(args.device, torch.bfloat16 if args.device == "cuda" else args.torch_dtype,
                        n=256 if args.quick else None)
    print(f"GEMM ceiling: {ceil['n']}^3 {ceil['dtype']}: {ceil['tflops']:.3g} TFLOP/s", flush=True)
    results, errors = [], []
    for c in cases(args.device, args.quick):
        if (args.only and args.only not in c[0]) or (args.max_tokens and c[4] > args.max_tokens):
            continue
        try:
            r = run_case(*c, args, n_sets=3 if args.device == "cuda" else 1, ceiling=ceil["tflops"])
            results.append(r)
            if args.device == "cuda":
                torch.cuda.empty_cache()      # the case's inputs and buffers are gone with run_case's frame
            print(f"{r['shape']:>12} {r['activation']:>8} {r['pool']:>4} {r['pattern']:>6} N={r['tokens']:>5}: "
                  f"gemm {r['gemm_s'] * 1e3:8.3f} ms  fused {r['fused_s'] * 1e3:8.3f} ms "
                  f"({r['fused_over_gemm']:.3f}x)  checked {r['fused_checked_s'] / r['gemm_s']:.3f}x  "
                  f"encode_pool {r['encode_pool_over_gemm']:.3f}x", flush=True)
            if r.get("breakdown"):
                print("    breakdown:", {k: round(v, 6) if isinstance(v, float) else v
                                         for k, v in r["breakdown"].items()}, flush=True)
        except Exception as e:        # noqa: BLE001  (record, go on with the other cases)
            traceback.print_exc()
            errors.append(dict(case=list(c), error=f"{type(e).__name__}: {e}"))
        save(args, ceil, results, errors, quiet=True)     # after every case: a timeout keeps what was done
    save(args, ceil, results, errors)
    print_table(results, [("shape", "shape", ""), ("activation", "act", ""), ("pool", "pool", ""),
                          ("pattern", "tokens", ""), ("tokens", "N", "d"), ("gemm_s", "gemm s", ".2e"),
                          ("fused_s", "fused s", ".2e"), ("fused_over_gemm", "fused/gemm", ".3f"),
                          ("encode_pool_over_gemm", "ep/gemm", ".3f"), ("fused_tflops", "TFLOP/s", ".3g"),
                          ("target", "target", ""), ("pass", "pass", "")])
    print(f"ceiling {ceil['tflops']:.3g} TFLOP/s ({ceil['n']}^3 {ceil['dtype']}); layout {args.layout}; "
          f"errors {len(errors)}")
    return 0 if results and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
