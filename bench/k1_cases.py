"""K1's measurements (run by bench_k1's worker process): one case = one SAE shape, activation, pool and token
pattern, timed as collection calls it — prepare_batch once, then encode_pool_stats_prepared per layer — against a
bare GEMM of the same packed tokens; one strategy entry = the same at a fixed shape with strategy switches set
(the only place the experimental switches are set)."""
from __future__ import annotations

import os
import zlib

import torch

from bench.common import graph_time, launches_per_call, paired, random_sae, time_op
from corrsteer_kernels import CorrStats, encode_pool, encode_pool_stats, encode_pool_stats_prepared, prepare_batch
from corrsteer_kernels._common import switched_off
from corrsteer_kernels.encode_pool import TORCH_FALLBACKS
from corrsteer_kernels.launch import MODE_STATS, Segments
from corrsteer_kernels.packed_kernel import config_for, tuned_configs, tuning_times
from corrsteer_kernels.split_kernel import SPLIT_CONFIGS, gemm_fp32, split_encode

SHAPES = {"d576-16k": (576, 16384, "jumprelu", None), "gemma2-2b": (2304, 16384, "jumprelu", None),
          "llama3.1-8b": (4096, 32768, "jumprelu", None),
          "topk-default": (576, 2304, "topk", 32),
          "tiny": (16, 40, "jumprelu", None), "tiny-topk": (16, 48, "topk", 4)}   # tiny: the interpreter's
MAX_T = 32                 # ragged pattern: lengths uniform in 1..32
LAUNCH_TARGET = 4          # launches per prepared layer call (issue 38)

# the strategy comparison: (name, environment switches, kernel family it forces or None, shape, activation)
STRATEGIES = [("fused", {"CORRSTEER_PACKED_STRATEGY": "fused"}, "packed", "gemma2-2b", "jumprelu"),
              ("split", {"CORRSTEER_PACKED_STRATEGY": "split"}, "split", "gemma2-2b", "jumprelu"),
              ("fused_n", {"CORRSTEER_PACKED_STRATEGY": "fused_n"}, "tokens_n", "gemma2-2b", "jumprelu"),
              ("auto+fused_n", {"CORRSTEER_TUNE_FUSED_N": "1"}, None, "gemma2-2b", "jumprelu"),
              ("combine_kernel", {"CORRSTEER_COMBINE": "kernel"}, "combine", "gemma2-2b", "jumprelu"),
              ("topk_two_pass", {"CORRSTEER_TOPK_STRATEGY": "two_pass"}, None, "topk-default", "topk"),
              ("topk_one_pass", {"CORRSTEER_TOPK_STRATEGY": "one_pass"}, "topk", "topk-default", "topk"),
              ("topk_auto", {"CORRSTEER_TOPK_STRATEGY": "auto"}, None, "topk-default", "topk")]


def target_for(device: str, shape: str, activation: str, pattern: str) -> float:
    """Per-case target of fused / GEMM. GPU (bf16 on Hopper): TopK 3.0, one token per sample and the Llama shape
    1.10, ragged 1.15. CPU (fp32): 1.25, TopK 1.5."""
    if device != "cuda":
        return 1.5 if activation == "topk" else 1.25
    if activation == "topk":
        return 3.0
    return 1.10 if (pattern == "one" or shape.startswith("llama")) else 1.15


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


def triton_launches(fn) -> int | None:
    """Triton kernel launches in one call of fn, counted by wrapping Triton's launch (`kernel[grid](...)`; compiled
    and interpreted alike); None where this Triton has no such hook."""
    try:
        from triton.runtime.jit import KernelInterface
    except ImportError:
        return None
    orig, count = KernelInterface.__getitem__, [0]

    def counting(self, grid):
        launch = orig(self, grid)

        def run(*a, **k):
            count[0] += 1
            return launch(*a, **k)
        return run
    KernelInterface.__getitem__ = counting
    try:
        fn()
    finally:
        KernelInterface.__getitem__ = orig
    return count[0]


def kernel_state() -> dict:
    """What this process chose and switched off so far (for the JSON)."""
    return dict(switched_off=switched_off(), torch_fallbacks=list(TORCH_FALLBACKS), tuned_configs=tuned_configs(),
                tuning_ms=tuning_times())


def run_case(shape, activation, pool, pattern, n_tokens, args, ceiling, backend="auto", target=None, light=False):
    """One case's figures (see bench_k1's docstring); light: the fused op alone, one repetition (the interpreter)."""
    d_in, d_sae, _, k = SHAPES[shape]
    dev, dtype = args.device, args.torch_dtype
    n_sets = 3 if dev == "cuda" else 1
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
    x, xp, y = sets[0]
    batch = prepare_batch(L, y, n_tokens=N)                   # once per batch, as collection does
    if args.layout == "packed":                               # what collection runs per layer
        fused = lambda: encode_pool_stats_prepared(xp, batch, sae, stats, pool, backend=backend)  # noqa: E731
    else:
        fused = lambda: encode_pool_stats(x, L, y, sae, stats, pool, backend=backend, check=False)  # noqa: E731
    ops = {"fused": fused, "unprepared": lambda: encode_pool_stats(x, L, y, sae, stats, pool, backend=backend,
                                                                   check=False),
           "encode_pool": lambda: encode_pool(x, L, sae, pool, backend=backend, out=pooled)}
    if light:                           # the interpreter: one call warms and counts, one is timed
        ops = {"fused": fused}
        extra = dict(launches=dict(kind="not counted (Triton interpreter)", count=None),
                     triton_launches=triton_launches(fused))
    else:
        for f in ops.values():          # compile / warm every path once before timing anything
            f()
        extra = dict(launches=launches_per_call(fused, dev), triton_launches=triton_launches(fused))
    extra["launches_target"] = LAUNCH_TARGET
    ratios, med = paired(lambda: torch.mm(xp, W, out=buf), ops, dev, 1 if light else args.reps)
    ratios.update({k: dict(median=None) for k in ("unprepared", "encode_pool") if k not in ratios})
    t_gemm = med["gemm"]
    if dev == "cuda":
        t_graph = graph_time(fused, dev)
        extra.update(fused_checked_s=time_op([lambda x=x, y=y: encode_pool_stats(x, L, y, sae, stats, pool)
                                              for x, _, y in sets], dev, args.reps),
                     fused_graph_s=t_graph, fused_graph_over_gemm=t_graph / t_gemm if isinstance(t_graph, float)
                     else None, gemm_rotating_s=time_op([lambda xp=xp: torch.mm(xp, W, out=buf) for _, xp, _ in sets],
                                                        dev, args.reps))
    flop = 2 * N * d_in * d_sae
    r = dict(shape=shape, d_in=d_in, d_sae=d_sae, activation=activation, k=k if activation == "topk" else None,
             pool=pool, pattern=pattern, samples=B, tokens=N, max_len=int(lengths.max()), layout=args.layout,
             call="encode_pool_stats_prepared" if args.layout == "packed" else "encode_pool_stats",
             x_shape=list(x.shape), dtype=str(dtype).replace("torch.", ""), input_sets=n_sets, backend=backend,
             gemm_s=t_gemm, fused_s=med["fused"], unprepared_s=med.get("unprepared"),
             encode_pool_s=med.get("encode_pool"),
             fused_over_gemm=ratios["fused"]["median"], unprepared_over_gemm=ratios["unprepared"]["median"],
             encode_pool_over_gemm=ratios["encode_pool"]["median"], paired=ratios, **extra,
             threads=torch.get_num_threads(),
             target=target_for(dev, shape, activation, pattern) if target is None else target,
             gemm_tflops=flop / t_gemm / 1e12, fused_tflops=flop / med["fused"] / 1e12)
    r["fused_pct_of_ceiling"] = 100 * r["fused_tflops"] / ceiling if ceiling else None
    r["pass"] = r["fused_over_gemm"] <= r["target"] if r["target"] else None
    n_launch = extra["launches"]["count"] if dev == "cuda" else extra["triton_launches"]
    r["launches_pass"] = n_launch <= LAUNCH_TARGET if (n_launch is not None and backend != "torch" and
                                                       (dev == "cuda" or backend == "triton")) else None
    if dev == "cuda" and activation != "topk" and backend == "auto":
        r["breakdown"] = breakdown(xp, L, y, sae, pool, args.reps, t_gemm)
    return r


def run_strategy(name, env, shape, activation, args, ceiling):
    """One strategy entry: the switches in env set for this call only; on the CPU the Triton interpreter at the tiny
    shape (code paths, no speed target)."""
    interp = args.device != "cuda"
    shape = ("tiny-topk" if activation == "topk" else "tiny") if interp else shape
    n = 24 if interp else 2048
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        r = run_case(shape, activation, "max", "ragged", n, args, ceiling, backend="triton" if interp else "auto",
                     target=0 if interp else None, light=interp)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    r.update(strategy=name, switches=env, interpreter=interp)
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
