"""What both Triton strategies of the packed-token op share: modes, the per-batch segment layout, the launch result
and the segmented-scan operators they pool with (packed_kernel.py: fused kernel; split_kernel.py: GEMM + pooling
pass)."""
from __future__ import annotations

from typing import NamedTuple

import torch

from ._common import HAS_TRITON, compute_dtype, interpreting, tl, triton

MODE_POOL, MODE_STATS, MODE_PRE = 0, 1, 2     # write pooled [B, d_sae]; fold statistics; write pre-activations


class Segments(NamedTuple):
    """Per-token sample ids and per-sample token ranges of a packed batch (int32, on the tokens' device)."""
    seg: torch.Tensor      # [N] sample of each token
    starts: torch.Tensor   # [B]
    ends: torch.Tensor     # [B]
    lengths: torch.Tensor  # [B] int64

    @classmethod
    def of(cls, lengths: torch.Tensor, n_tokens: int) -> "Segments":
        ends = torch.cumsum(lengths, 0)
        seg = torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device), lengths,
                                      output_size=n_tokens)
        return cls(seg.to(torch.int32), (ends - lengths).to(torch.int32), ends.to(torch.int32), lengths)


class Launch(NamedTuple):
    out: torch.Tensor | None      # MODE_POOL: [B, d_sae]; MODE_PRE: [N, d_sae]
    part: torch.Tensor | None     # MODE_STATS: [n_m, len(PART_FIELDS), d_sae] float64 per-M-tile sums
    bnd: torch.Tensor             # [2 n_m, d_sae] fp32 partial pools of samples crossing tile edges
    slot: torch.Tensor            # [2 n_m] int32: sample + 1 per used boundary slot, 0 = unused


def dot_settings(x_dtype: torch.dtype, w_dtype: torch.dtype) -> dict:
    """The constexprs of dot_tile for operands of these dtypes: COMPUTE (the dtype it multiplies in), F32_DOT (fp32
    operands: always under the interpreter, whose tl.dot is wrong on 16-bit operands) and PREC (tf32x3 on a GPU,
    ieee under the interpreter)."""
    cdt, interp = compute_dtype(x_dtype, w_dtype), interpreting()
    return dict(COMPUTE=TL_DTYPES[cdt], F32_DOT=interp or cdt == torch.float32, PREC="ieee" if interp else "tf32x3")


TL_DTYPES = {}                # torch dtype -> the Triton dtype a kernel multiplies in
if HAS_TRITON:
    TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}

    @triton.jit
    def seg_max(v1, f1, v2, f2):
        """Segmented-scan operator: restart at a row flagged as the first of its piece, else running max."""
        return tl.where(f2 != 0, v2, tl.maximum(v1, v2)), f1 | f2

    @triton.jit
    def seg_sum(v1, f1, v2, f2):
        """Segmented-scan operator: restart at a row flagged as the first of its piece, else running sum."""
        return tl.where(f2 != 0, v2, v1 + v2), f1 | f2

    @triton.jit
    def pool_rows(act, offs_m, offs_n, pid_m, N_TOK, N_DICT, seg_ptr, start_ptr, end_ptr, y_ptr, out_ptr, part_ptr,
                  bnd_ptr, slot_ptr, stride_om, NF: tl.constexpr, MODE: tl.constexpr, MEAN: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """The epilogue of a [BLOCK_M tokens, BLOCK_N features] tile of activations act (tokens on M, M tile pid_m):
        a segmented scan along the rows pools every sample's piece of the tile (the last row of each piece holds its
        pool). A sample wholly inside the tile is written to out (MODE_POOL) or folded into the tile's fp32 sums,
        relative to the tile's first whole sample (tile_shift), stored as float64 part[pid_m] (MODE_STATS); a sample
        crossing a tile edge leaves its partial pool in boundary slot 2 pid_m (entering the tile) or 2 pid_m + 1
        (leaving it)."""
        mask_m = offs_m < N_TOK
        mask_n = offs_n < N_DICT
        tile_lo = pid_m * BLOCK_M
        tile_hi = tl.minimum(tile_lo + BLOCK_M, N_TOK)
        seg = tl.load(seg_ptr + offs_m, mask=mask_m, other=0)
        st = tl.load(start_ptr + seg, mask=mask_m, other=0)
        en = tl.load(end_ptr + seg, mask=mask_m, other=0)
        first = ((offs_m == st) | (offs_m == tile_lo)).to(tl.int32)
        flags = tl.broadcast_to(first[:, None], (BLOCK_M, BLOCK_N))
        if MEAN:
            z, _ = tl.associative_scan((act, flags), 0, seg_sum)
        else:
            z, _ = tl.associative_scan((act, flags), 0, seg_max)
        last = mask_m & ((offs_m == en - 1) | (offs_m == tile_hi - 1))
        whole = last & (st >= tile_lo) & (en <= tile_hi)
        if MEAN:
            zw = z / tl.maximum(en - st, 1).to(tl.float32)[:, None]
        else:
            zw = z
        zw = tl.where(whole[:, None], zw, 0.0)
        if MODE == 1:
            yr = tl.load(y_ptr + seg, mask=whole, other=0.0).to(tl.float32)
            c = tile_shift(zw, whole, offs_m, 0)
            s_z, s_zz, s_zy, s_zp, s_a, s_ap = stat_sums(zw, shifted(zw, c, whole, 0), yr[:, None], 0)
            store_sums(part_ptr + pid_m.to(tl.int64) * NF * N_DICT + offs_n, N_DICT, mask_n, s_z, s_zz, s_zy,
                       s_zp, s_a, s_ap, c, tl.sum(whole.to(tl.float32), axis=0), tl.sum(yr, axis=0))
        else:
            tl.store(out_ptr + seg[:, None].to(tl.int64) * stride_om + offs_n[None, :], zw,
                     mask=whole[:, None] & mask_n[None, :])
        edge = last & ~((st >= tile_lo) & (en <= tile_hi))
        slot = 2 * pid_m + (st >= tile_lo).to(tl.int32)
        tl.store(bnd_ptr + slot[:, None].to(tl.int64) * N_DICT + offs_n[None, :], z,
                 mask=edge[:, None] & mask_n[None, :])
        tl.store(slot_ptr + slot, seg + 1, mask=edge)

    @triton.jit
    def dot_tile(a_ptr, b_ptr, offs_m, offs_n, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                 COMPUTE: tl.constexpr, F32_DOT: tl.constexpr, PREC: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """fp32 [BLOCK_M, BLOCK_N] = A[offs_m, :K] @ B[:K, offs_n] (A [M, K], B [K, N] given by element strides;
        rows/columns past M/N and the K tail load as 0). F32_DOT multiplies in fp32 with PREC (the interpreter's
        tl.dot is wrong on 16-bit operands), else in COMPUTE."""
        mask_m = offs_m < M
        mask_n = offs_n < N
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < K
            a = tl.load(a_ptr + offs_m[:, None].to(tl.int64) * stride_am + offs_k[None, :].to(tl.int64) * stride_ak,
                        mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            b = tl.load(b_ptr + offs_k[:, None].to(tl.int64) * stride_bk + offs_n[None, :].to(tl.int64) * stride_bn,
                        mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            if F32_DOT:
                acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision=PREC)
            else:
                acc = tl.dot(a.to(COMPUTE), b.to(COMPUTE), acc)
        return acc

    @triton.jit
    def edge_slots(seg_ptr, start_ptr, end_ptr, slot_ptr, c, lo, hi):
        """The two boundary slots of token range c = [lo, hi) (a tile or a chunk), written whole so that they need no
        zeroing launch (every program of the range writes the same values): 2c = sample + 1 of the sample entering
        the range, 2c + 1 = of the one leaving it (a sample that does both takes slot 2c only), 0 where unused."""
        nonempty = lo < hi
        s_in = tl.load(seg_ptr + lo, mask=nonempty, other=0)
        s_out = tl.load(seg_ptr + hi - 1, mask=nonempty, other=0)
        enters = nonempty & (tl.load(start_ptr + s_in, mask=nonempty, other=0) < lo)
        leaves = nonempty & (tl.load(end_ptr + s_out, mask=nonempty, other=0) > hi)
        tl.store(slot_ptr + 2 * c, tl.where(enters, s_in + 1, 0))
        tl.store(slot_ptr + 2 * c + 1, tl.where(leaves & ~(enters & (s_in == s_out)), s_out + 1, 0))

    @triton.jit
    def tile_shift(zw, whole, offs, AXIS: tl.constexpr):
        """[features]: the pooled values zw (tokens along AXIS) of the first sample that ends whole here (the lowest
        offs where `whole`, 1-D along AXIS); 0 where none does. A tile's shift (corr_stats: its sums are of z - it)."""
        first = tl.min(tl.where(whole, offs, 2147483647), axis=0)
        pick = whole & (offs == first)
        return tl.sum(tl.where(tl.expand_dims(pick, 1 - AXIS), zw, 0.0), axis=AXIS)

    @triton.jit
    def next_shift(c, has, zw, whole, offs, AXIS: tl.constexpr):
        """(c, has) of a range read block by block: its shift is the first whole sample's pooled values, fixed
        once one has been seen (has > 0); the blocks before it added nothing."""
        c = tl.where(has > 0, c, tile_shift(zw, whole, offs, AXIS))
        return c, tl.maximum(has, tl.max(whole.to(tl.int32), axis=0))

    @triton.jit
    def shifted(zw, c, whole, AXIS: tl.constexpr):
        """zw - c where a sample ends whole (whole: 1-D along the token axis AXIS), else 0."""
        return tl.where(tl.expand_dims(whole, 1 - AXIS), zw - tl.expand_dims(c, AXIS), 0.0)

    @triton.jit
    def stat_sums(zw, dz, yr, AXIS: tl.constexpr):
        """The six fp32 sums along AXIS of pooled values zw (0 wherever no sample ends), their shifted values dz
        (shifted()) and scores yr (broadcastable to zw): dz, dz^2, dz y, z [y > 0], [z > 0], [z > 0][y > 0]."""
        pr = (yr > 0).to(tl.float32)
        ar = (zw > 0).to(tl.float32)
        return (tl.sum(dz, axis=AXIS), tl.sum(dz * dz, axis=AXIS), tl.sum(dz * yr, axis=AXIS),
                tl.sum(zw * pr, axis=AXIS), tl.sum(ar, axis=AXIS), tl.sum(ar * pr, axis=AXIS))

    @triton.jit
    def fold_sums(s_z, s_zz, s_zy, s_zp, s_a, s_ap, zw, dz, yr, AXIS: tl.constexpr):
        """The six running sums plus stat_sums(zw, dz, yr, AXIS)."""
        t_z, t_zz, t_zy, t_zp, t_a, t_ap = stat_sums(zw, dz, yr, AXIS)
        return s_z + t_z, s_zz + t_zz, s_zy + t_zy, s_zp + t_zp, s_a + t_a, s_ap + t_ap

    @triton.jit
    def store_sums(base, N_DICT, mask, s_z, s_zz, s_zy, s_zp, s_a, s_ap, c, cnt, sy):
        """Store one tile's (or range's) sums as float64 rows base + f N_DICT in PART_FIELDS order: the sums, the
        shift c they are relative to, the count of samples cnt and their sum of scores sy (scalars, broadcast);
        pooled activations are never negative, so sum_z_active_pos = sum_z_pos."""
        tl.store(base, s_z.to(tl.float64), mask=mask)
        tl.store(base + N_DICT, s_zz.to(tl.float64), mask=mask)
        tl.store(base + 2 * N_DICT, s_zy.to(tl.float64), mask=mask)
        tl.store(base + 3 * N_DICT, s_zp.to(tl.float64), mask=mask)
        tl.store(base + 4 * N_DICT, s_a.to(tl.float64), mask=mask)
        tl.store(base + 5 * N_DICT, s_ap.to(tl.float64), mask=mask)
        tl.store(base + 6 * N_DICT, s_zp.to(tl.float64), mask=mask)
        tl.store(base + 7 * N_DICT, c.to(tl.float64), mask=mask)
        tl.store(base + 8 * N_DICT, (s_a * 0.0 + cnt).to(tl.float64), mask=mask)
        tl.store(base + 9 * N_DICT, (s_a * 0.0 + sy).to(tl.float64), mask=mask)
