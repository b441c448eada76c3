"""The CPU (torch) path of encode_pool and encode_pool_stats.

Consecutive samples in groups of at most CPU_TILE_ELEMENTS / tile pre-activations (a longer sample alone), the
dictionary in tiles of at most CPU_TILE_N features; per (group, tile) block one GEMM writes fp32 pre-activations
into a scratch buffer and a few whole-block torch passes finish it. Measured on a 2-core Xeon (AVX-512): a pass that
writes a bool tensor (pre > thr, torch.where, masked_fill_) costs 3-10 times one that writes floats, so none is
taken over a [tokens, d_sae] block:
  - max-pool, relu / jumprelu: the raw x @ W_enc is pooled per sample (index_reduce_ "amax" from -inf); bias and
    threshold are applied to the pooled [samples, tile] block. Exact: fl(m + b) is monotone in m, so
    max_t fl(p_t + b) = fl(max_t p_t + b), and an empty sample (-inf) thresholds to 0.
  - every other case (mean-pool, one token per sample): bias added in place, the activation as a float mask
    (copy_ + gt_, both vectorised) multiplied in; mean-pool sums per sample with segment_reduce.
  - TopK (d_sae <= TOPK_ONE_PASS_MAX): the whole dictionary width per group, torch.topk(sorted=False), pooled into
    [samples, d_sae] by scatter_reduce_ ("amax") or index_add_ (float64 sums: exact, order-independent). Wider TopK
    dictionaries take two passes: token_thresholds finds each token's cut first.
Statistics (fold_block): fp32 GEMMs of the pooled block and its activity mask against [1, y, y > 0] over at most
FOLD_ROWS samples at a time, added into float64 accumulators (counts are exact; the Triton kernels sum <= BLOCK_M
samples in fp32 the same way). Deterministic for a given thread count and configuration.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

from .corr_stats import FEATURE_FIELDS
from .sae_weights import SAEWeights

CPU_TILE_ELEMENTS = 1 << 25      # fp32 pre-activations alive at once (128 MiB): GEMMs much smaller than this
CPU_TILE_N = 1 << 15             # lose 10-30% against one large GEMM on the CPU
TOPK_ONE_PASS_MAX = 1 << 17
FOLD_ROWS = 512                  # samples summed in fp32 before a float64 add

Sink = Callable[[slice, slice, torch.Tensor, "torch.Tensor | None"], None]
"""sink(samples, columns, pooled fp32 [samples, columns], activity mask fp32 0/1 of pooled or None)."""


def sample_groups(lengths: list[int], max_tokens: int) -> list[tuple[int, int, int, int]]:
    """Consecutive samples in groups of at most max_tokens tokens (a longer sample alone):
    [(first sample, end sample, first token, end token)]."""
    groups, b0, t0, t = [], 0, 0, 0
    for b, n in enumerate(lengths):
        if t + n - t0 > max_tokens and b > b0:
            groups.append((b0, b, t0, t))
            b0, t0 = b, t
        t += n
    if b0 < len(lengths):
        groups.append((b0, len(lengths), t0, t))
    return groups


def active_mask(z: torch.Tensor, thr: torch.Tensor | float, out: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 1.0 where z > thr, else 0.0, without a bool tensor (copy_ then gt_ in place)."""
    out = torch.empty_like(z) if out is None else out
    return out.copy_(z).gt_(thr)


def fold_block(z: torch.Tensor, mask: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """float64 [len(FEATURE_FIELDS), F]: the feature sums of pooled activations z [b, F] (fp32, >= 0) against
    scores y [b] (float64); mask = the fp32 0/1 activity of z (computed when None). fp32 GEMMs over at most
    FOLD_ROWS samples at a time, accumulated in float64. sum_z_active_pos = sum_z_pos as z >= 0."""
    if mask is None:
        mask = active_mask(z, 0.0)
    out = torch.zeros(len(FEATURE_FIELDS), z.shape[1], dtype=torch.float64, device=z.device)
    sq = torch.empty((min(FOLD_ROWS, z.shape[0]), z.shape[1]), dtype=torch.float32, device=z.device)
    for r in range(0, z.shape[0], FOLD_ROWS):
        zb, mb, yb = z[r:r + FOLD_ROWS], mask[r:r + FOLD_ROWS], y[r:r + FOLD_ROWS]
        n = zb.shape[0]
        ones = torch.ones(n, dtype=torch.float32, device=z.device)
        w = torch.stack([ones, yb.float(), (yb > 0).float()])
        lin = w @ zb                                   # sum_z, sum_zy, sum_z_pos
        cnt = w[0::2] @ mb                             # n_active, n_active_pos
        z2 = ones @ torch.mul(zb, zb, out=sq[:n])      # sum_z2
        out += torch.stack([lin[0], z2, lin[1], lin[2], cnt[0], cnt[1], lin[2]])
    return out


def topk_pool(pre: torch.Tensor, lengths: list[int], k: int, pool: str) -> torch.Tensor:
    """[len(lengths), d_sae] fp32 pooled TopK activations from one group's pre-activations [n, d_sae] fp32."""
    n, d_sae = pre.shape
    out = torch.zeros((len(lengths), d_sae), dtype=torch.float32 if pool == "max" else torch.float64,
                      device=pre.device)
    if n == 0:
        return out.float()
    top = torch.topk(pre, min(k, d_sae), dim=1, sorted=False)
    vals = top.values.clamp(min=0)
    seg = torch.repeat_interleave(torch.arange(len(lengths), device=pre.device),
                                  torch.tensor(lengths, device=pre.device), output_size=n)
    flat = (seg[:, None] * d_sae + top.indices).flatten()
    if pool == "max":
        out.view(-1).scatter_reduce_(0, flat, vals.flatten(), "amax")
        return out
    out.view(-1).index_add_(0, flat, vals.flatten().double())    # fp64: exact, so the add order is irrelevant
    return (out / torch.tensor(lengths, device=pre.device).clamp(min=1).double()[:, None]).float()


def token_thresholds(xp: torch.Tensor, sae: SAEWeights) -> torch.Tensor:
    """fp32 [N]: for packed tokens xp [N, d_in], a value between the k-th and (k+1)-th largest pre-activation
    (the first pass of two, for TopK dictionaries wider than TOPK_ONE_PASS_MAX)."""
    N, k, d_sae = xp.shape[0], sae.k, sae.d_sae
    if k >= d_sae:
        return torch.full((N,), float("-inf"), device=xp.device)
    W, b_eff = sae.W_enc, sae.effective_bias()
    tile = min(d_sae, CPU_TILE_N)
    out = torch.empty(N, dtype=torch.float32, device=xp.device)
    step = max(1, CPU_TILE_ELEMENTS // tile)
    for s in range(0, N, step):
        xc, best = xp[s:s + step].float(), None
        for j in range(0, d_sae, tile):
            pre = torch.addmm(b_eff[j:j + tile], xc, W[:, j:j + tile].float())
            cand = pre if best is None else torch.cat([best, pre], dim=1)
            best = torch.topk(cand, min(k + 1, cand.shape[1]), dim=1).values
        out[s:s + step] = 0.5 * (best[:, k - 1] + best[:, k])
    return out


def one_pass_topk(sae: SAEWeights) -> bool:
    return sae.activation == "topk" and sae.d_sae <= TOPK_ONE_PASS_MAX


def _pool_block(pre, seg, lens, n_samples, pool, b_eff, thr_f, thr_t, one_token):
    """(pooled [n_samples, tile] fp32, its activity mask or None) of one block of raw pre-activations x @ W [n, tile]
    (modified in place)."""
    if pool == "max" and thr_t is None and not one_token:         # pool, then bias and threshold
        m = torch.full((n_samples, pre.shape[1]), float("-inf"), device=pre.device)
        with warnings.catch_warnings():     # torch calls index_reduce_ "beta" once per process; users need not see it
            warnings.simplefilter("ignore", UserWarning)
            m.index_reduce_(0, seg, pre, "amax")
        m += b_eff
        mask = active_mask(m, thr_f)
        return m.nan_to_num_(0.0, 0.0, 0.0).mul_(mask), mask   # -inf (empty sample) * 0 would be nan
    pre += b_eff
    mask = active_mask(pre, thr_f)
    if thr_t is not None:
        mask.mul_(torch.empty_like(pre).copy_(pre).ge_(thr_t[:, None]))
    pre.mul_(mask)                  # dropped entries become +-0.0 (writers add 0.0: -0.0 + 0.0 = +0.0)
    if one_token:
        return pre, mask
    pooled = torch.segment_reduce(pre, "sum", lengths=lens, axis=0)     # 3x faster than index_add_ here
    return pooled.div_(lens.clamp(min=1).float()[:, None]), None


def pooled_blocks_torch(xp: torch.Tensor, lengths: torch.Tensor, sae: SAEWeights, pool: str, sink: Sink) -> None:
    """Hand every (sample group, dictionary tile) block of pooled activations to sink."""
    lens = lengths.tolist()
    W, b_eff, thr_f = sae.W_enc, sae.effective_bias(), sae.feature_threshold()
    if one_pass_topk(sae):
        for b0, b1, t0, t1 in sample_groups(lens, max(1, CPU_TILE_ELEMENTS // sae.d_sae)):
            pre = torch.addmm(b_eff, xp[t0:t1].float(), W.float())
            sink(slice(b0, b1), slice(0, sae.d_sae), topk_pool(pre, lens[b0:b1], sae.k, pool), None)
        return
    thr_t = token_thresholds(xp, sae) if sae.activation == "topk" else None
    tile_n = min(sae.d_sae, CPU_TILE_N)
    groups = sample_groups(lens, max(1, CPU_TILE_ELEMENTS // tile_n))
    rows = max((t1 - t0 for _, _, t0, t1 in groups), default=0)
    scratch = torch.empty(rows * tile_n, dtype=torch.float32, device=xp.device)
    Wf = W.float()
    for b0, b1, t0, t1 in groups:
        xg = xp[t0:t1].float()
        one_token = all(n == 1 for n in lens[b0:b1])
        seg = None if one_token else torch.repeat_interleave(
            torch.arange(b1 - b0, device=xp.device), lengths[b0:b1], output_size=t1 - t0)
        for j in range(0, sae.d_sae, tile_n):
            cols = slice(j, min(sae.d_sae, j + tile_n))
            pre = torch.mm(xg, Wf[:, cols], out=scratch[:(t1 - t0) * (cols.stop - j)].view(t1 - t0, cols.stop - j))
            pooled, mask = _pool_block(pre, seg, lengths[b0:b1], b1 - b0, pool, b_eff[cols], thr_f[cols],
                                       None if thr_t is None else thr_t[t0:t1], one_token)
            sink(slice(b0, b1), cols, pooled, mask)
