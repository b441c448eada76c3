"""The packed-token Triton kernel behind encode_pool and encode_pool_stats.

    packed_encode(xp, segs, sae, pool, mode, y=None, out=None) -> see MODE_* below

xp [N, d_in] holds the valid tokens of all samples back to back (sample b = rows starts[b]:ends[b]); the grid tiles
xp along M (BLOCK_M tokens, spanning samples) and the dictionary along N (BLOCK_N features), in grouped order so
that programs running together share W_enc strips in L2. Each program computes one [BLOCK_M, BLOCK_N] tile of
pre-activations with tl.dot, applies the activation, and pools in its epilogue with one segmented scan along the
tile's rows (running max or sum, restarting where a sample's piece of the tile begins), after which the last row of
each piece holds its pool — no loop over samples:
  - a sample whose tokens all lie in the tile is pooled there and either folded into per-tile statistics
    (MODE_STATS) or written to out (MODE_POOL);
  - a sample that crosses a tile edge leaves its partial max/sum in a boundary slot (at most two per M tile: the
    sample entering the tile and the one leaving it); the launcher combines the slots per sample afterwards.
Per-tile statistics are summed in fp32 over the tile's samples (at most BLOCK_M), stored as float64 per M tile and
reduced over M tiles in float64 in a fixed order, so results are bitwise deterministic for a given block
configuration. MODE_PRE writes the pre-activations (+ bias) in fp32 instead, for the TopK path.

packed_encode may instead run the split strategy (split_kernel.py: cuBLAS GEMM to fp32 pre-activations, then a
streaming pooling kernel with the same outputs and boundary slots) where tuning timed it faster (config_for), or where
CORRSTEER_PACKED_STRATEGY=split forces it.
"""
from __future__ import annotations

import torch

from . import split_kernel
from ._common import (
    HAS_TRITON,
    KERNEL_FAMILIES,
    PACKED_STRATEGIES,
    KernelUnavailable,
    fault_point,
    interpreting,
    kernel_options,
    switch_off,
    switched_off,
    tl,
    triton,
)
from .corr_stats import PART_FIELDS, feature_sums
from .launch import MODE_PRE, MODE_STATS, Launch, Segments, dot_settings
from .split_kernel import split_available, split_encode
from .tokens_n_kernel import INTERPRETER_TOKENS_N, TOKENS_N_CONFIGS, tokens_n_encode

DEFAULT_CONFIG = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3)
INTERPRETER_CONFIG = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=16, GROUP_M=2)
TUNE_CONFIGS = [DEFAULT_CONFIG,
                dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4),
                dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4),
                dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3),
                dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4),
                dict(BLOCK_M=64, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3)]
_TUNED: dict = {}
_TUNE_TIMES: dict = {}
STRATEGIES = PACKED_STRATEGIES


if HAS_TRITON:
    from .launch import dot_tile, pool_rows

    @triton.jit
    def _tile_pre(x_ptr, w_ptr, beff_ptr, N_TOK, N_DICT, D, stride_xm, stride_xk, stride_wk, stride_wn,
                  COMPUTE: tl.constexpr, F32_DOT: tl.constexpr, PREC: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
        """(pid_m, offs_m, offs_n, pre [BLOCK_M, BLOCK_N] fp32) of this program's tile, in grouped order (the Triton
        matmul tutorial's: GROUP_M M-tiles run together and share each W_enc strip in L2)."""
        pid = tl.program_id(0)
        n_m = tl.cdiv(N_TOK, BLOCK_M)
        n_n = tl.cdiv(N_DICT, BLOCK_N)
        width = GROUP_M * n_n
        first_m = (pid // width) * GROUP_M
        group_size = tl.minimum(n_m - first_m, GROUP_M)
        pid_m = first_m + (pid % width) % group_size
        pid_n = (pid % width) // group_size
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N_DICT
        acc = dot_tile(x_ptr, w_ptr, offs_m, offs_n, N_TOK, N_DICT, D, stride_xm, stride_xk, stride_wk, stride_wn,
                       COMPUTE, F32_DOT, PREC, BLOCK_M, BLOCK_N, BLOCK_K)
        pre = acc + tl.load(beff_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
        return pid_m, offs_m, offs_n, pre

    @triton.jit
    def _pre_kernel(x_ptr, w_ptr, beff_ptr, out_ptr, N_TOK, N_DICT, D, stride_xm, stride_xk, stride_wk, stride_wn,
                    stride_om, COMPUTE: tl.constexpr, F32_DOT: tl.constexpr, PREC: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
        # MODE_PRE: out [N, d_sae] fp32 = x @ W_enc + b_eff (the TopK path selects each token's k largest from it)
        pid_m, offs_m, offs_n, pre = _tile_pre(x_ptr, w_ptr, beff_ptr, N_TOK, N_DICT, D, stride_xm, stride_xk,
                                               stride_wk, stride_wn, COMPUTE, F32_DOT, PREC,
                                               BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)
        tl.store(out_ptr + offs_m[:, None].to(tl.int64) * stride_om + offs_n[None, :], pre,
                 mask=(offs_m < N_TOK)[:, None] & (offs_n < N_DICT)[None, :])

    @triton.jit
    def _packed_kernel(x_ptr, w_ptr, beff_ptr, thrf_ptr, thrt_ptr, seg_ptr, start_ptr, end_ptr, y_ptr,
                       out_ptr, part_ptr, bnd_ptr, slot_ptr, N_TOK, N_DICT, D,
                       stride_xm, stride_xk, stride_wk, stride_wn, stride_om,
                       NF: tl.constexpr, MODE: tl.constexpr, HAS_TOKEN_THR: tl.constexpr, MEAN: tl.constexpr,
                       COMPUTE: tl.constexpr, F32_DOT: tl.constexpr, PREC: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
        pid_m, offs_m, offs_n, pre = _tile_pre(x_ptr, w_ptr, beff_ptr, N_TOK, N_DICT, D, stride_xm, stride_xk,
                                               stride_wk, stride_wn, COMPUTE, F32_DOT, PREC,
                                               BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)
        mask_m = offs_m < N_TOK
        mask_n = offs_n < N_DICT
        keep = (pre > tl.load(thrf_ptr + offs_n, mask=mask_n, other=float("inf"))[None, :]) & mask_m[:, None]
        if HAS_TOKEN_THR:
            keep = keep & (pre >= tl.load(thrt_ptr + offs_m, mask=mask_m, other=float("inf"))[:, None])
        act = tl.where(keep, pre, 0.0)
        pool_rows(act, offs_m, offs_n, pid_m, N_TOK, N_DICT, seg_ptr, start_ptr, end_ptr, y_ptr, out_ptr, part_ptr,
                  bnd_ptr, slot_ptr, stride_om, NF, MODE, MEAN, BLOCK_M, BLOCK_N)


def _launch(xp, segs, sae, pool, mode, y, out, thr_t, cfg) -> Launch:
    fault_point(family_of(cfg))
    if cfg.get("SPLIT"):
        return split_encode(xp, segs, sae, pool, mode, y, out, thr_t, cfg)
    if cfg.get("TOKENS_N"):
        return tokens_n_encode(xp, segs, sae, pool, mode, y, out, thr_t, cfg)
    N, D = xp.shape
    n_dict = sae.d_sae
    cfg = dict(cfg)
    BM, BN = cfg["BLOCK_M"], cfg["BLOCK_N"]
    n_m = triton.cdiv(N, BM)
    dev = xp.device
    part = torch.zeros((n_m, len(PART_FIELDS), n_dict), dtype=torch.float64, device=dev) if mode == MODE_STATS \
        else None
    n_slots = 0 if mode == MODE_PRE else 2 * n_m
    bnd = torch.empty((n_slots, n_dict), dtype=torch.float32, device=dev)
    slot = torch.zeros(n_slots, dtype=torch.int32, device=dev)
    W = sae.W_enc
    grid = (n_m * triton.cdiv(n_dict, BN),)
    dots = dot_settings(xp.dtype, W.dtype)
    if mode == MODE_PRE:
        _pre_kernel[grid](xp, W, sae.effective_bias(), out, N, n_dict, D, xp.stride(0), xp.stride(1),
                          W.stride(0), W.stride(1), out.stride(0), **dots, **cfg)
        return Launch(out, None, bnd, slot)
    dummy = bnd
    _packed_kernel[grid](
        xp, W, sae.effective_bias(), sae.feature_threshold(), thr_t if thr_t is not None else dummy,
        segs.seg, segs.starts, segs.ends, y if y is not None else dummy,
        out if out is not None else dummy, part if part is not None else dummy, bnd, slot,
        N, n_dict, D, xp.stride(0), xp.stride(1), W.stride(0), W.stride(1),
        out.stride(0) if out is not None else 0,
        NF=len(PART_FIELDS), MODE=mode, HAS_TOKEN_THR=thr_t is not None, MEAN=pool == "mean", **dots, **cfg)
    return Launch(out, part, bnd, slot)


def strategy() -> str:
    """CORRSTEER_PACKED_STRATEGY: "fused" (one Triton kernel), "split" (cuBLAS GEMM + streaming pooling kernel),
    "fused_n" (tokens on the accumulator's N axis, tokens_n_kernel.py; pooling modes only) or "auto" (default:
    whichever timed faster for the shape, see config_for; fused_n is a candidate there only with
    CORRSTEER_TUNE_FUSED_N=1 until a GPU has measured it)."""
    return kernel_options().packed_strategy


def family_of(cfg: dict) -> str:
    """The kernel family a configuration runs: "split", "tokens_n" or "packed" (the fused kernel)."""
    return "split" if cfg.get("SPLIT") else "tokens_n" if cfg.get("TOKENS_N") else "packed"


def n_bucket(n_tok: int) -> int:
    """The tuning key's token count: the power of two at or above n_tok (2048 and 8192 tokens tune apart)."""
    return 1 << max(0, n_tok - 1).bit_length()


def _fixed(forced: str, tokens_n: bool, pre: bool) -> list:
    """The untuned configurations in order of preference (interpreter, CORRSTEER_AUTOTUNE=0, below 1024 tokens):
    a forced strategy's own, else the fused kernel, then split, then fused_n (pooling modes) as fallbacks."""
    interp = interpreting()
    fused = INTERPRETER_CONFIG if interp else DEFAULT_CONFIG
    split = split_kernel.INTERPRETER_SPLIT if interp else split_kernel.SPLIT_CONFIGS[0]
    tok = INTERPRETER_TOKENS_N if interp else TOKENS_N_CONFIGS[0]
    if forced == "split":
        return [split]
    if forced == "fused_n" and tokens_n:
        return [tok]
    return [fused] if forced != "auto" else [fused, split] + ([] if pre else [tok])


def _tuned(xp, sae, forced: str, tokens_n: bool, pre: bool) -> list:
    """The tuner's candidates for the strategy (auto: the fused kernel's, fused_n's with CORRSTEER_TUNE_FUSED_N=1,
    split's where split_available)."""
    if forced == "split" or (tokens_n and forced == "fused_n"):
        cands = []
    else:
        cands = list(TUNE_CONFIGS)
    cands += TOKENS_N_CONFIGS if tokens_n else []
    if forced == "split" or (forced == "auto" and split_available(xp, sae.W_enc)):
        cands += split_kernel.SPLIT_CONFIGS[:1] if pre else split_kernel.SPLIT_CONFIGS
    return cands


def _enabled(cands: list, forced: str) -> list:
    """cands whose family is on; a forced strategy whose family is off raises KernelUnavailable (with why)."""
    off = switched_off()
    if forced != "auto" and family_of(cands[0]) in off:
        fam = family_of(cands[0])
        raise KernelUnavailable(f"CORRSTEER_PACKED_STRATEGY={forced}: the {fam} kernel is switched off ({off[fam]})")
    keep = [c for c in cands if family_of(c) not in off]
    if not keep:
        raise KernelUnavailable(f"every packed-token strategy is switched off: {off}")
    return keep


def config_for(xp, sae, pool, mode, thr_t) -> dict:
    """The strategy and block configuration: fixed under the interpreter, with CORRSTEER_AUTOTUNE=0 or below 1024
    tokens (the fused DEFAULT_CONFIG, or the forced strategy's first), else the fastest of TUNE_CONFIGS (+
    SPLIT_CONFIGS where split_available), timed once per (d_in, d_sae, dtypes, pre-only or pooling, strategy, token
    count bucket n_bucket, families switched off) and cached. The pooling modes share one choice (timed on
    MODE_STATS, one-token samples: the heavier epilogue), which bounds the number of compilations per shape.
    Families switched off (kernel_enabled) are skipped; a family whose every candidate failed to run in tuning is
    switched off (switch_off, reason recorded); a forced strategy that is off raises KernelUnavailable."""
    opts = kernel_options()
    forced, pre = opts.packed_strategy, mode == MODE_PRE
    tokens_n = not pre and (forced == "fused_n" or (forced == "auto" and opts.tune_fused_n))
    if interpreting() or not opts.autotune or xp.shape[0] < 1024:
        return _enabled(_fixed(forced, tokens_n, pre), forced)[0]
    key = (xp.shape[1], sae.d_sae, xp.dtype, sae.W_enc.dtype, pre, forced, tokens_n, n_bucket(xp.shape[0]),
           tuple(sorted(switched_off())))
    if key not in _TUNED:
        cands = _enabled(_tuned(xp, sae, forced, tokens_n, pre) or _fixed(forced, tokens_n, pre), forced)
        times, errors = _time_candidates(xp, sae, pool, mode, thr_t, cands)
        best = min(range(len(times)), key=times.__getitem__)
        _TUNE_TIMES[key] = [(dict(c), t, e) for c, t, e in zip(cands, times, errors)]
        for fam in {family_of(c) for c in cands}:
            errs = [e for c, e in zip(cands, errors) if family_of(c) == fam]
            if all(errs):                 # every candidate of the family failed: off, with the first error
                switch_off(fam, errs[0])
        if times[best] == float("inf"):
            raise KernelUnavailable(f"no packed-token configuration ran here: {errors[0]}")
        _TUNED[key] = cands[best]
    return _TUNED[key]


def _time_candidates(xp, sae, pool, mode, thr_t, cands) -> tuple[list, list]:
    """(milliseconds, error or "") of each candidate on this shape (inf where it did not compile or run)."""
    from triton.testing import do_bench
    if mode != MODE_PRE:
        mode, pool, thr_t = MODE_STATS, "max", None
    N = xp.shape[0]
    segs = Segments.of(torch.full((N,), 1, dtype=torch.long, device=xp.device), N)   # one token per sample
    y = torch.zeros(N, dtype=torch.float64, device=xp.device)
    rows = N if mode != MODE_STATS else 0
    scratch = torch.empty((rows, sae.d_sae), dtype=torch.float32, device=xp.device) if rows else None
    times, errors = [], []
    for cfg in cands:
        try:
            times.append(do_bench(lambda: _launch(xp, segs, sae, pool, mode, y, scratch, thr_t, cfg),
                                  warmup=5, rep=20))
            errors.append("")
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:            # a config that does not fit (shared memory, registers), or a failure
            times.append(float("inf"))
            errors.append(f"{type(e).__name__}: {str(e)[:300]}")
    return times, errors


def _key_name(k) -> str:
    return (f"{k[0]}x{k[1]} {str(k[2]).replace('torch.', '')}/{str(k[3]).replace('torch.', '')} "
            f"{'pre' if k[4] else 'pooling'}{'' if k[5] == 'auto' else ' ' + k[5]}{' +fused_n' if k[6] else ''}"
            f" N<={k[7]}{' off=' + ','.join(k[8]) if k[8] else ''}")


def tuned_configs() -> dict:
    """{"d_in x d_sae dtypes pooling|pre": block configuration} chosen so far in this process (for benchmarks)."""
    return {_key_name(k): dict(cfg) for k, cfg in _TUNED.items()}


def tuning_times() -> dict:
    """{"d_in x d_sae ...": [(configuration, milliseconds), ...]}: every candidate timed so far (for benchmarks)."""
    return {_key_name(k): [{**c, "ms": t, **({"error": e} if e else {})} for c, t, e in v]
            for k, v in _TUNE_TIMES.items()}


def packed_encode(xp: torch.Tensor, segs: Segments, sae, pool: str, mode: int, y=None, out=None,
                  thr_t=None) -> Launch:
    """Launch the kernel on packed tokens xp [N, d_in] (N >= 1). MODE_POOL writes out [B, d_sae] for samples
    contained in a tile; MODE_STATS fills Launch.part; both leave crossing samples in (bnd, slot).

    Fail-soft where the strategy was chosen automatically (CORRSTEER_PACKED_STRATEGY=auto): a configuration that
    fails to compile or launch switches its family off (reason recorded, one warning) and the next choice runs; a
    forced strategy raises."""
    for _ in range(len(KERNEL_FAMILIES)):
        cfg = config_for(xp, sae, pool, mode, thr_t)
        if strategy() != "auto":
            return _launch(xp, segs, sae, pool, mode, y, out, thr_t, cfg)
        try:
            return _launch(xp, segs, sae, pool, mode, y, out, thr_t, cfg)
        except (KernelUnavailable, torch.cuda.OutOfMemoryError):
            raise
        except Exception as e:            # noqa: BLE001  (switch the family off, then the next choice)
            switch_off(family_of(cfg), f"{type(e).__name__}: {str(e)[:300]}")
    raise KernelUnavailable(f"every packed-token strategy failed here: {switched_off()}")


def _combine_slots(launch: Launch, pool: str, lengths: torch.Tensor):
    """(z [slots + 1, d_sae] fp32, sample [slots + 1], new [slots]) with no host sync: row g of z pools the g-th
    sample that crossed a tile edge (its slots combined; mean-pool divided by its length), sample[g] is that sample,
    rows past the last such sample are 0, and new marks the slots that start a sample.

    Used slots hold sample + 1 and their samples never decrease with the slot index, so slot i starts a new sample
    exactly where its owner exceeds the running max of the owners before it; it goes to row (number of new samples
    so far - 1)."""
    n = launch.slot.shape[0]
    owner = launch.slot.long()
    used = owner > 0
    before = torch.cat([owner.new_zeros(1), torch.cummax(owner, 0).values[:-1]])
    new = used & (owner > before)
    group = torch.where(used, torch.cumsum(new.long(), 0) - 1, torch.full_like(owner, n))
    dtype = torch.float32 if pool == "max" else torch.float64   # fp32 parts summed in float64: order-independent
    z = torch.zeros((n + 1, launch.bnd.shape[1]), dtype=dtype, device=launch.bnd.device)
    parts = torch.where(used[:, None], launch.bnd, 0.0).to(dtype)     # unused slots hold garbage: zero them
    if pool == "max":
        z.scatter_reduce_(0, group[:, None].expand_as(parts), parts, "amax")
    else:
        z.index_add_(0, group, parts)
    sample = torch.zeros(n + 1, dtype=torch.long, device=owner.device).scatter_(0, group, (owner - 1).clamp(min=0))
    if pool == "mean":
        z = z / lengths[sample].clamp(min=1).double()[:, None]
    return z.float(), sample, new


def combine_boundary(launch: Launch, pool: str, lengths: torch.Tensor):
    """(samples [S] long, pooled [S, d_sae] fp32) for the samples that crossed a tile edge (one host sync: S)."""
    z, sample, new = _combine_slots(launch, pool, lengths)
    S = int(new.sum())
    return sample[:S], z[:S]


def boundary_feature_sums(launch: Launch, pool: str, lengths: torch.Tensor, y: torch.Tensor, shift: torch.Tensor
                          ) -> torch.Tensor:
    """float64 [F, d_sae]: the feature sums of the samples that crossed a tile edge, relative to shift [d_sae], with
    no host sync (the rows of _combine_slots past the last such sample are masked out)."""
    z, sample, new = _combine_slots(launch, pool, lengths)
    valid = torch.arange(z.shape[0], device=z.device) < new.sum()
    return feature_sums(z, y[sample], shift, nonneg=True, valid=valid)
