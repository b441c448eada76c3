"""encode_pool_stats: the fused op — SAE encode, activation, per-sample pooling and the CorrStats update in one pass.

    encode_pool_stats(x, lengths, y, sae, stats, pool="max", backend="auto") -> stats
    encode_pool_stats_prepared(xp, batch, sae, stats, pool="max", backend="auto") -> stats   (per layer; batch =
        prepare_batch(lengths, y), once per batch: segments, y cast and scalar sums are not redone per layer)

x padded [B, T, d_in] or packed [N, d_in] (see encode_pool), lengths [B] ints, y [B] scores (y > 0 counts as
correct), stats a CorrStats(d_sae). Equal (to fp32 rounding of the pooled values) to
`stats.update(encode_pool(x, lengths, sae, pool), y)`, but [B, d_sae] is never materialised, nor [N, d_sae] beyond
one chunk of at most 512 MiB (split strategy):
  - torch path: one (sample group, dictionary tile) block of pooled values at a time, folded into the float64 sums;
  - triton path: the packed-token kernel pools every sample that lies inside one [BLOCK_M tokens, BLOCK_N features]
    tile in its epilogue and adds it to per-tile fp32 sums relative to the tile's first sample (the tile's shift),
    stored as float64 [n_m_tiles, len(PART_FIELDS), d_sae] with the shift, count and sum of y, folded onto the
    stats' shift in float64 in tile order (corr_stats.fold_parts; deterministic); the few samples crossing a tile
    edge are combined from their boundary slots and folded by torch (relative to the stats' shift, in float64).
    Where tuning picks the split strategy (large 16-bit shapes on a GPU), a cuBLAS GEMM writes fp32 pre-activations
    chunk by chunk (at most CHUNK_BYTES = 512 MiB at a time) and a streaming kernel does the same pooling and
    folding (split_kernel.py). Works for dictionaries up to 10^6 wide and more.
"""
from __future__ import annotations

import torch

from ._common import KernelUnavailable, check_float, check_pool, resolve_backend
from .combine_kernel import combine_launch
from .corr_stats import FEATURE_FIELDS, CorrStats, column_mean, feature_sums, fold_parts, parts_shift, zero_sums
from .encode_pool import check_inputs, combine_kernel_on, encode_pool_reference, packed_launch, torch_fallback
from .launch import MODE_STATS
from .packed_kernel import boundary_feature_sums
from .prepared import PreparedBatch, prepare_batch
from .sae_weights import SAEWeights
from .torch_path import TopKRows, fold_block, fold_topk_rows, one_thread, pooled_blocks_torch, topk_mean


def folder(stats: CorrStats, y: torch.Tensor):
    """A torch-path sink that folds each pooled block (activations, never negative) into stats' float64 sums."""
    def fold(rows, cols, pooled, mask):
        if isinstance(pooled, TopKRows):
            c = stats.shift_for(cols, lambda: topk_mean(pooled, stats.d_sae)).to(pooled.values.device)
            sums = fold_topk_rows(pooled, y[rows], stats.d_sae, c)
        else:
            c = stats.shift_for(cols, lambda: column_mean(pooled)).to(pooled.device)
            sums = fold_block(pooled, mask, y[rows], c)
        stats.add_feature_sums(cols, sums.to(stats.device))
    return fold


def _stats_triton(xp, batch: PreparedBatch, sae, stats, pool):
    if xp.dtype == torch.float64 or sae.W_enc.dtype == torch.float64:
        raise TypeError("the Triton backend takes fp32/fp16/bf16 x and W_enc, not fp64")
    if xp.shape[0] == 0:          # every sample empty: all pooled values are 0 (relative to the stats' shift)
        stats.add_feature_sums(slice(None), zero_sums(*batch.empty_samples(), stats.shift.to(xp.device)).to(
            stats.device))
        return
    segs = batch.segments()
    launch = packed_launch(xp, segs, sae, pool, MODE_STATS, y=batch.y)
    c = stats.shift_for(slice(None), lambda: parts_shift(launch.part)).to(xp.device)
    empty = zero_sums(*batch.empty_samples(), c)          # length-0 samples: pooled 0, seen by no tile
    if combine_kernel_on():     # tiles and crossing samples added in one launch
        here = stats.features.device == xp.device
        feats = stats.features if here else torch.zeros((len(FEATURE_FIELDS), sae.d_sae), dtype=torch.float64,
                                                        device=xp.device)
        combine_launch(launch, segs, pool, MODE_STATS, y=batch.y, features=feats, shift=c)
        feats += empty
        if not here:
            stats.add_feature_sums(slice(None), feats.to(stats.device))
        return
    sums = fold_parts(launch.part, c) + boundary_feature_sums(launch, pool, batch.lengths, batch.y, c) + empty
    stats.add_feature_sums(slice(None), sums.to(stats.device))


def _fold(xp, batch: PreparedBatch, sae, stats, pool, backend: str, requested: str) -> None:
    if backend == "triton":
        try:
            return _stats_triton(xp, batch, sae, stats, pool)
        except KernelUnavailable as e:      # every Triton strategy is off here: the torch path (recorded) for auto
            if requested == "triton":
                raise
            torch_fallback("encode_pool_stats", e)
    if backend == "reference":
        z = encode_pool_reference(xp, batch.lengths, sae, pool)
        c = stats.shift_for(slice(None), lambda: column_mean(z)).to(z.device)
        stats.add_feature_sums(slice(None), feature_sums(z, batch.y, c).to(stats.device))
    else:
        pooled_blocks_torch(xp, batch.lengths, sae, pool, folder(stats, batch.y), cache=batch.cache)


def encode_pool_stats_prepared(xp: torch.Tensor, batch: PreparedBatch, sae: SAEWeights, stats: CorrStats,
                               pool: str = "max", backend: str = "auto") -> CorrStats:
    """The per-layer half of encode_pool_stats: fold packed tokens xp [batch.n_tokens, d_in] of a prepared batch
    (prepare_batch, once per batch) into `stats` (in place) and return it. Shapes, dtypes and devices are checked;
    nothing that reads device data (no host sync on the triton backend)."""
    check_float("x", xp, 2)
    check_pool(pool)
    if not isinstance(sae, SAEWeights):
        raise TypeError(f"sae must be SAEWeights, got {type(sae).__name__}")
    if xp.shape[0] != batch.n_tokens or xp.shape[1] != sae.d_in or xp.device != sae.device:
        raise ValueError(f"x must be packed [{batch.n_tokens}, {sae.d_in}] on {sae.device}, got "
                         f"{list(xp.shape)} on {xp.device}")
    if not isinstance(stats, CorrStats) or stats.d_sae != sae.d_sae:
        raise ValueError(f"stats must be a CorrStats of d_sae={sae.d_sae}")
    requested, backend = backend, resolve_backend(backend, xp.device)
    if batch.lengths.shape[0] == 0:
        return stats
    _fold(xp, batch, sae, stats, pool, backend, requested)
    with one_thread():
        stats.scalars += batch.scalars.to(stats.device)
    return stats


def encode_pool_stats(x: torch.Tensor, lengths, y, sae: SAEWeights, stats: CorrStats, pool: str = "max",
                      backend: str = "auto", check: bool = True) -> CorrStats:
    """Fold one batch into `stats` (in place) and return it. See the module docstring.

    check=False skips the checks that read device data (NaN/inf in x and y, lengths in range and summing to N):
    with packed x and the triton backend the call then makes no host sync. A caller that folds several layers of
    one batch builds prepare_batch once and calls encode_pool_stats_prepared per layer."""
    xp, lengths = check_inputs(x, lengths, sae, pool, check)
    if not isinstance(stats, CorrStats) or stats.d_sae != sae.d_sae:
        raise ValueError(f"stats must be a CorrStats of d_sae={sae.d_sae}")
    with one_thread():             # a few small ops (on a loaded machine an OpenMP team costs more than they do)
        batch = prepare_batch(lengths, y, n_tokens=xp.shape[0], check=check)
    return encode_pool_stats_prepared(xp, batch, sae, stats, pool, backend)
