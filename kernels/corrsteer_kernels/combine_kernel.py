"""The boundary combine as one small Triton kernel: what packed_kernel.combine_boundary / boundary_feature_sums do in
torch (about a dozen launches), in one launch with no host sync.

    combine_launch(launch, segs, pool, mode, y=None, out=None, features=None)

launch = a Launch from any packed-token strategy: slot [S] int32 (sample + 1 per used boundary slot, 0 = unused;
used owners never decrease with the slot index) and bnd [S, d_sae] fp32 partial pools; for MODE_STATS also part
[n_tiles, F, d_sae] float64 per-tile sums. The grid is (d_sae / BLOCK_N,); each program owns BLOCK_N feature
columns and walks the S slots in order, carrying the running pool of the current sample (max, or a float64 sum for
mean) and finishing it where the owner changes:
  - MODE_POOL: out [B, d_sae] row (owner - 1) = the pool (mean: / the sample's length);
  - MODE_STATS: the finished pool (rounded to fp32, as the tiles' pools are) joins the float64 feature sums, which
    start from part summed over tiles in index order; the total is added into features [F, d_sae] float64 (each
    column by exactly one program: deterministic, no atomics).
"""
from __future__ import annotations

import torch

from ._common import HAS_TRITON, fault_point, interpreting, kernel_options, tl, triton
from .corr_stats import PART_FIELDS
from .launch import MODE_POOL, MODE_STATS, Launch, Segments

COMBINE_BLOCK_N = 256
INTERPRETER_COMBINE_BLOCK_N = 32

if HAS_TRITON:

    @triton.jit
    def _add_row(feat_ptr, row, N_DICT, offs_n, v):
        """features[row, offs_n] += v (float64)."""
        ptr = feat_ptr + row * N_DICT + offs_n
        mask = offs_n < N_DICT
        tl.store(ptr, tl.load(ptr, mask=mask, other=0.0) + v, mask=mask)

    @triton.jit
    def _combine_kernel(bnd_ptr, slot_ptr, start_ptr, end_ptr, y_ptr, part_ptr, feat_ptr, shift_ptr, out_ptr,
                        N_SLOTS, N_PART, N_DICT, stride_om,
                        NF: tl.constexpr, MODE: tl.constexpr, MEAN: tl.constexpr, BLOCK_N: tl.constexpr):
        offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N_DICT
        s_z = tl.zeros([BLOCK_N], dtype=tl.float64)
        s_zz = tl.zeros([BLOCK_N], dtype=tl.float64)
        s_zy = tl.zeros([BLOCK_N], dtype=tl.float64)
        s_zp = tl.zeros([BLOCK_N], dtype=tl.float64)
        s_a = tl.zeros([BLOCK_N], dtype=tl.float64)
        s_ap = tl.zeros([BLOCK_N], dtype=tl.float64)
        s_zap = tl.zeros([BLOCK_N], dtype=tl.float64)
        tgt = tl.zeros([BLOCK_N], dtype=tl.float64)
        if MODE == 1:                  # the tiles' own sums, rebased onto the shift tgt (corr_stats.rebase), in order
            tgt = tl.load(shift_ptr + offs_n, mask=mask_n, other=0.0)
            for t in range(0, N_PART):
                base = part_ptr + t * NF * N_DICT + offs_n
                p_z = tl.load(base, mask=mask_n, other=0.0)
                d = tl.load(base + 7 * N_DICT, mask=mask_n, other=0.0) - tgt
                cnt = tl.load(base + 8 * N_DICT, mask=mask_n, other=0.0)
                s_z += p_z + cnt * d
                s_zz += tl.load(base + N_DICT, mask=mask_n, other=0.0) + d * (2.0 * p_z + cnt * d)
                s_zy += tl.load(base + 2 * N_DICT, mask=mask_n, other=0.0) + d * tl.load(base + 9 * N_DICT,
                                                                                         mask=mask_n, other=0.0)
                s_zp += tl.load(base + 3 * N_DICT, mask=mask_n, other=0.0)
                s_a += tl.load(base + 4 * N_DICT, mask=mask_n, other=0.0)
                s_ap += tl.load(base + 5 * N_DICT, mask=mask_n, other=0.0)
                s_zap += tl.load(base + 6 * N_DICT, mask=mask_n, other=0.0)
        cur = tl.zeros([], dtype=tl.int32)          # owner (sample + 1) of the running pool z; 0: none yet
        z = tl.zeros([BLOCK_N], dtype=tl.float64)
        for s in range(0, N_SLOTS + 1):            # the extra step (owner -1) finishes the last sample
            owner = tl.load(slot_ptr + s, mask=s < N_SLOTS, other=-1)
            if (cur > 0) & (owner != 0) & (owner != cur):
                b = cur - 1
                zz = z
                if MEAN:
                    zz = zz / tl.maximum(tl.load(end_ptr + b) - tl.load(start_ptr + b), 1).to(tl.float64)
                if MODE == 1:
                    zz = zz.to(tl.float32).to(tl.float64)
                    yb = tl.load(y_ptr + b).to(tl.float64)
                    pos = (yb > 0).to(tl.float64)
                    act = (zz > 0).to(tl.float64)
                    dz = zz - tgt
                    s_z += dz
                    s_zz += dz * dz
                    s_zy += dz * yb
                    s_zp += zz * pos
                    s_a += act
                    s_ap += act * pos
                    s_zap += zz * pos          # pooled activations are never negative: z * (z > 0) = z
                else:
                    tl.store(out_ptr + b.to(tl.int64) * stride_om + offs_n, zz.to(tl.float32), mask=mask_n)
            if owner > 0:
                v = tl.load(bnd_ptr + s * N_DICT + offs_n, mask=mask_n, other=0.0).to(tl.float64)
                if owner == cur:
                    if MEAN:
                        z = z + v
                    else:
                        z = tl.maximum(z, v)
                else:
                    z = v
                cur = owner
        if MODE == 1:
            _add_row(feat_ptr, 0, N_DICT, offs_n, s_z)
            _add_row(feat_ptr, 1, N_DICT, offs_n, s_zz)
            _add_row(feat_ptr, 2, N_DICT, offs_n, s_zy)
            _add_row(feat_ptr, 3, N_DICT, offs_n, s_zp)
            _add_row(feat_ptr, 4, N_DICT, offs_n, s_a)
            _add_row(feat_ptr, 5, N_DICT, offs_n, s_ap)
            _add_row(feat_ptr, 6, N_DICT, offs_n, s_zap)


def combine_launch(launch: Launch, segs: Segments, pool: str, mode: int, y=None, out=None, features=None,
                   shift=None):
    """MODE_POOL: write the crossing samples' pools into out [B, d_sae] fp32. MODE_STATS: add the batch's feature
    sums (tiles + crossing samples) relative to shift [d_sae] float64 into features [F, d_sae] float64 (both on the
    tokens' device, contiguous)."""
    fault_point("combine")
    n_dict = launch.bnd.shape[1]
    BN = INTERPRETER_COMBINE_BLOCK_N if interpreting() else COMBINE_BLOCK_N
    if mode == MODE_STATS:
        part = launch.part
        if features is None or features.device != part.device or not features.is_contiguous():
            raise ValueError("features must be a contiguous float64 [F, d_sae] tensor on the tokens' device")
        if shift is None or shift.device != part.device or shift.dtype != torch.float64:
            raise ValueError("shift must be a float64 [d_sae] tensor on the tokens' device")
        shift = shift.contiguous()
    elif mode == MODE_POOL:
        part = features = shift = launch.bnd           # unused
    else:
        raise ValueError("combine_launch pools (MODE_POOL) or folds statistics (MODE_STATS)")
    dummy = launch.bnd
    _combine_kernel[(triton.cdiv(n_dict, BN),)](
        launch.bnd, launch.slot, segs.starts, segs.ends, y if y is not None else dummy, part, features, shift,
        out if out is not None else dummy, launch.slot.shape[0], part.shape[0] if mode == MODE_STATS else 0,
        n_dict, out.stride(0) if out is not None else 0,
        NF=len(PART_FIELDS), MODE=mode, MEAN=pool == "mean", BLOCK_N=BN)
    return out if mode == MODE_POOL else features


def combine_strategy() -> str:
    """CORRSTEER_COMBINE: "torch" (default until a GPU has measured this kernel: packed_kernel.combine_boundary /
    boundary_feature_sums) or "kernel" (combine_launch)."""
    return kernel_options().combine
