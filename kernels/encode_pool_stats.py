"""encode_pool_stats: the fused op — SAE encode, activation, per-sample pooling and the CorrStats update in one pass.

    encode_pool_stats(x, lengths, y, sae, stats, pool="max", backend="auto") -> stats

x [B, T, d_in] fp32/fp16/bf16, lengths [B] ints, y [B] scores (y > 0 counts as correct), stats a CorrStats(d_sae).
Equal (to fp32 rounding of the pooled values) to `stats.update(encode_pool(x, lengths, sae, pool), y)`, but neither
[B*T, d_sae] nor [B, d_sae] is ever materialised: the torch path finishes one dictionary tile [B, tile] and folds it
into the float64 sums before the next; the Triton kernel keeps one [BLOCK_N] pooled row in registers, adds it to
float64 accumulators, and writes per-program partial sums [G, 7, d_sae] (G sample groups, reduced in a fixed
order, so results are deterministic). Works for dictionaries up to 10^6 wide and more.
"""
from __future__ import annotations

import torch

from ._common import HAS_TRITON, resolve_backend, tl, triton
from .corr_stats import FEATURE_FIELDS, CorrStats, check_scores, feature_sums
from .encode_pool import (check_inputs, encode_pool_reference, pooled_tiles_torch, triton_launch_args)
from .sae_weights import SAEWeights

if HAS_TRITON:
    from .encode_pool import pooled_tile

    @triton.jit
    def _encode_pool_stats_kernel(x_ptr, w_ptr, beff_ptr, thrf_ptr, thrt_ptr, len_ptr, y_ptr, part_ptr, B, N, D,
                                  stride_xb, stride_xt, stride_xk, stride_wk, stride_wn, stride_tb,
                                  HAS_TOKEN_THR: tl.constexpr, MEAN: tl.constexpr, COMPUTE: tl.constexpr,
                                  F32_DOT: tl.constexpr, PREC: tl.constexpr,
                                  BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # grid (G, cdiv(N, BLOCK_N)); program (g, j) pools samples g, g+G, ... over columns tile j and writes
        # its float64 sums to part[g, :, tile j] (part is [G, 7, N] contiguous).
        g = tl.program_id(0)
        G = tl.num_programs(0)
        offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        s_z = tl.zeros([BLOCK_N], dtype=tl.float64)
        s_z2 = tl.zeros([BLOCK_N], dtype=tl.float64)
        s_zy = tl.zeros([BLOCK_N], dtype=tl.float64)
        s_zp = tl.zeros([BLOCK_N], dtype=tl.float64)
        c_a = tl.zeros([BLOCK_N], dtype=tl.float64)
        c_ap = tl.zeros([BLOCK_N], dtype=tl.float64)
        s_zap = tl.zeros([BLOCK_N], dtype=tl.float64)
        for b in range(g, B, G):
            L = tl.load(len_ptr + b).to(tl.int32)
            y = tl.load(y_ptr + b)
            z = pooled_tile(x_ptr, w_ptr, beff_ptr, thrf_ptr, thrt_ptr, b, L, offs_n, mask_n, D,
                            stride_xb, stride_xt, stride_xk, stride_wk, stride_wn, stride_tb,
                            HAS_TOKEN_THR, MEAN, COMPUTE, F32_DOT, PREC, BLOCK_T, BLOCK_N, BLOCK_K).to(tl.float64)
            pos = (y > 0).to(tl.float64)
            act = (z > 0).to(tl.float64)
            s_z += z
            s_z2 += z * z
            s_zy += z * y
            s_zp += z * pos
            c_a += act
            c_ap += act * pos
            s_zap += z * act * pos
        base = part_ptr + g.to(tl.int64) * 7 * N + offs_n
        tl.store(base, s_z, mask=mask_n)
        tl.store(base + N, s_z2, mask=mask_n)
        tl.store(base + 2 * N, s_zy, mask=mask_n)
        tl.store(base + 3 * N, s_zp, mask=mask_n)
        tl.store(base + 4 * N, c_a, mask=mask_n)
        tl.store(base + 5 * N, c_ap, mask=mask_n)
        tl.store(base + 6 * N, s_zap, mask=mask_n)


def _sample_groups(B: int, n_tiles: int, device: torch.device) -> int:
    """Enough sample groups to fill the GPU (>= 2 programs per SM), never more than B."""
    if device.type != "cuda":
        return max(1, min(B, 2))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(B, -(-2 * sms // n_tiles)))


def _stats_triton(x, lengths, y, sae, stats, pool):
    B = x.shape[0]
    a = triton_launch_args(x, lengths, sae, pool)
    n_tiles = triton.cdiv(a["N"], a["meta"]["BLOCK_N"])
    G = _sample_groups(B, n_tiles, x.device)
    part = torch.full((G, len(FEATURE_FIELDS), a["N"]), float("nan"), dtype=torch.float64, device=x.device)
    _encode_pool_stats_kernel[(G, n_tiles)](*a["tensors"], a["lengths"], y, part, B, a["N"], a["D"], *a["strides"],
                                            **a["meta"], **a["launch"])
    stats.add_feature_sums(slice(None), part.sum(0).to(stats.device))


def encode_pool_stats(x: torch.Tensor, lengths, y, sae: SAEWeights, stats: CorrStats, pool: str = "max",
                      backend: str = "auto") -> CorrStats:
    """Fold one batch into `stats` (in place) and return it. See the module docstring."""
    lengths = check_inputs(x, lengths, sae, pool)
    if not isinstance(stats, CorrStats) or stats.d_sae != sae.d_sae:
        raise ValueError(f"stats must be a CorrStats of d_sae={sae.d_sae}")
    y = check_scores(y, x.shape[0], x.device)
    backend = resolve_backend(backend, x.device)
    if x.shape[0] == 0:
        return stats
    if backend == "reference":
        stats.add_feature_sums(slice(None), feature_sums(encode_pool_reference(x, lengths, sae, pool), y).to(stats.device))
    elif backend == "triton":
        _stats_triton(x, lengths, y, sae, stats, pool)
    else:
        def fold(cols, pooled):
            stats.add_feature_sums(cols, feature_sums(pooled, y).to(stats.device))

        pooled_tiles_torch(x, lengths, sae, pool, fold)
    stats.add_scalar_sums(y.to(stats.device))
    return stats
