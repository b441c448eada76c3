"""The split strategy behind the packed-token op: a cuBLAS GEMM writes fp32 pre-activations, one streaming Triton
pass applies the activation and pools (or folds statistics) — same outputs, same Launch, as packed_kernel's fused
kernel, chosen by timing where it is faster (large 16-bit GEMMs on Hopper, where cuBLAS's main loop beats a Triton
tile loop that also carries the pooling epilogue).

    split_encode(xp, segs, sae, pool, mode, y, out, thr_t, cfg) -> launch.Launch

xp [N, d_in] packed tokens. The GEMM runs over chunks of tokens (a multiple of ROWS; at most CHUNK_BYTES of fp32
pre-activations at a time). The pooling kernel's grid is (row ranges of ROWS tokens, BLOCK_N
feature columns); each program sweeps its range SUB rows at a time (with PREFETCH, the next block's loads are issued
before this block is worked on): b_eff added, activation, a segmented scan along the SUB rows (max or sum,
restarting where a sample begins), the running pool carried from one SUB block to the next. A sample wholly inside
the range is written out (MODE_POOL) or folded into fp32 per-range sums stored once as float64 (MODE_STATS: part
[n_ranges, F, d_sae]); a sample crossing a range edge leaves its partial pool in boundary slot 2r (entering range r)
or 2r+1 (leaving it), exactly as the fused kernel does per M tile, so the launcher's combine is shared.
Deterministic: fixed ranges, fixed reduction order, cuBLAS's GEMM deterministic for a given shape.
"""
from __future__ import annotations

import torch

from ._common import HAS_TRITON, tl, triton
from .corr_stats import PART_FIELDS
from .launch import MODE_PRE, MODE_STATS, Launch

CHUNK_BYTES = 512 * 2 ** 20
# seen on an H200 (2304x16384 bf16, 8192 tokens, before PREFETCH): these four within 5% of each other, the
# pooling kernel at ~1.4 TB/s against 3.9 TB/s for a torch read of the same bytes; L2-sized GEMM chunks 8% slower
SPLIT_CONFIGS = [dict(SPLIT=True, ROWS=128, SUB=16, BLOCK_N=256, num_warps=2, PREFETCH=1),
                 dict(SPLIT=True, ROWS=128, SUB=8, BLOCK_N=256, num_warps=2, PREFETCH=1),
                 dict(SPLIT=True, ROWS=256, SUB=8, BLOCK_N=512, num_warps=4, PREFETCH=1),
                 dict(SPLIT=True, ROWS=128, SUB=16, BLOCK_N=512, num_warps=4, PREFETCH=1),
                 dict(SPLIT=True, ROWS=512, SUB=8, BLOCK_N=256, num_warps=2, PREFETCH=1),
                 dict(SPLIT=True, ROWS=128, SUB=16, BLOCK_N=256, num_warps=2, PREFETCH=0),
                 dict(SPLIT=True, ROWS=256, SUB=8, BLOCK_N=256, num_warps=2, PREFETCH=0)]
INTERPRETER_SPLIT = dict(SPLIT=True, ROWS=16, SUB=4, BLOCK_N=32, num_warps=1, PREFETCH=1)

if HAS_TRITON:
    from .launch import fold_sums, next_shift, seg_max, seg_sum, shifted, store_sums

    @triton.jit
    def _load_rows(pre_ptr, seg_ptr, rst_ptr, ren_ptr, ry_ptr, offs_m, offs_n, mask_n, tile_hi, ROW0, stride_pm,
                   MODE: tl.constexpr):
        """One block of rows: raw pre-activations [SUB, BLOCK_N] and per-row sample, start, end, score (row-indexed
        arrays, so no load waits on another and the whole block can be fetched ahead)."""
        mask_m = offs_m < tile_hi
        v = tl.load(pre_ptr + (offs_m - ROW0)[:, None].to(tl.int64) * stride_pm + offs_n[None, :],
                    mask=mask_m[:, None] & mask_n[None, :], other=0.0).to(tl.float32)
        seg = tl.load(seg_ptr + offs_m, mask=mask_m, other=0)
        st = tl.load(rst_ptr + offs_m, mask=mask_m, other=0)
        en = tl.load(ren_ptr + offs_m, mask=mask_m, other=0)
        if MODE == 1:
            yr = tl.load(ry_ptr + offs_m, mask=mask_m, other=0.0)
        else:
            yr = tl.zeros_like(offs_m).to(tl.float32)
        return v, seg, st, en, yr

    @triton.jit
    def _pool_pre_kernel(pre_ptr, beff_ptr, thrf_ptr, thrt_ptr, seg_ptr, rst_ptr, ren_ptr, ry_ptr,
                         out_ptr, part_ptr, bnd_ptr, slot_ptr, ROW0, G0, N_TOK, N_DICT, stride_pm, stride_om,
                         NF: tl.constexpr, MODE: tl.constexpr, HAS_TOKEN_THR: tl.constexpr, MEAN: tl.constexpr,
                         ROWS: tl.constexpr, SUB: tl.constexpr, BLOCK_N: tl.constexpr, PREFETCH: tl.constexpr):
        # pre_ptr holds rows ROW0.. of the pre-activations (one GEMM chunk); this program: range G0 + pid 0.
        # PREFETCH: block i+1 is loaded before block i is worked on, so its loads fly while this one computes.
        pid_r = G0 + tl.program_id(0)
        pid_n = tl.program_id(1)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N_DICT
        beff = tl.load(beff_ptr + offs_n, mask=mask_n, other=0.0)
        thrf = tl.load(thrf_ptr + offs_n, mask=mask_n, other=float("inf"))
        tile_lo = pid_r * ROWS
        tile_hi = tl.minimum(tile_lo + ROWS, N_TOK)
        carry = tl.zeros([BLOCK_N], dtype=tl.float32)
        s_z = tl.zeros([BLOCK_N], dtype=tl.float32)
        s_zz = tl.zeros([BLOCK_N], dtype=tl.float32)
        s_zy = tl.zeros([BLOCK_N], dtype=tl.float32)
        s_zp = tl.zeros([BLOCK_N], dtype=tl.float32)
        s_a = tl.zeros([BLOCK_N], dtype=tl.float32)
        s_ap = tl.zeros([BLOCK_N], dtype=tl.float32)
        c = tl.zeros([BLOCK_N], dtype=tl.float32)           # the range's shift, set by its first whole sample
        has = tl.zeros([], dtype=tl.int32)
        cnt = tl.zeros([], dtype=tl.float32)
        sy = tl.zeros([], dtype=tl.float32)
        nv, nseg, nst, nen, ny = _load_rows(pre_ptr, seg_ptr, rst_ptr, ren_ptr, ry_ptr, tile_lo + tl.arange(0, SUB),
                                            offs_n, mask_n, tile_hi, ROW0, stride_pm, MODE)
        for sub_lo in range(tile_lo, tile_hi, SUB):
            offs_m = sub_lo + tl.arange(0, SUB)
            mask_m = offs_m < tile_hi
            if PREFETCH:
                v, seg, st, en, yr = nv, nseg, nst, nen, ny
                nv, nseg, nst, nen, ny = _load_rows(pre_ptr, seg_ptr, rst_ptr, ren_ptr, ry_ptr, offs_m + SUB,
                                                    offs_n, mask_n, tile_hi, ROW0, stride_pm, MODE)
            else:
                v, seg, st, en, yr = _load_rows(pre_ptr, seg_ptr, rst_ptr, ren_ptr, ry_ptr, offs_m,
                                                offs_n, mask_n, tile_hi, ROW0, stride_pm, MODE)
            v = v + beff[None, :]
            keep = (v > thrf[None, :]) & mask_m[:, None]
            if HAS_TOKEN_THR:
                keep = keep & (v >= tl.load(thrt_ptr + offs_m, mask=mask_m, other=float("inf"))[:, None])
            act = tl.where(keep, v, 0.0)
            flags = tl.broadcast_to(((offs_m == st) | (offs_m == sub_lo)).to(tl.int32)[:, None], (SUB, BLOCK_N))
            if MEAN:
                z, _ = tl.associative_scan((act, flags), 0, seg_sum)
            else:
                z, _ = tl.associative_scan((act, flags), 0, seg_max)
            # the first piece of this block continues a sample begun in an earlier block of the same range
            cont = ((st < sub_lo) & (sub_lo > tile_lo))[:, None]
            if MEAN:
                z = tl.where(cont, z + carry[None, :], z)
            else:
                z = tl.where(cont, tl.maximum(z, carry[None, :]), z)
            last_row = tl.minimum(sub_lo + SUB, tile_hi) - 1
            carry = tl.sum(tl.where((offs_m == last_row)[:, None], z, 0.0), axis=0)
            last = mask_m & ((offs_m == en - 1) | (offs_m == tile_hi - 1))
            inside = (st >= tile_lo) & (en <= tile_hi)
            whole = last & inside
            if MEAN:
                scale = tl.where(whole, 1.0 / tl.maximum(en - st, 1).to(tl.float32), 0.0)   # one divide per row
                zw = z * scale[:, None]
            else:
                zw = tl.where(whole[:, None], z, 0.0)
            if MODE == 1:
                c, has = next_shift(c, has, zw, whole, offs_m, 0)
                yw = tl.where(whole, yr, 0.0)
                s_z, s_zz, s_zy, s_zp, s_a, s_ap = fold_sums(s_z, s_zz, s_zy, s_zp, s_a, s_ap, zw,
                                                             shifted(zw, c, whole, 0), yw[:, None], 0)
                cnt += tl.sum(whole.to(tl.float32), axis=0)
                sy += tl.sum(yw, axis=0)
            else:
                tl.store(out_ptr + seg[:, None].to(tl.int64) * stride_om + offs_n[None, :], zw,
                         mask=whole[:, None] & mask_n[None, :])
            edge = last & ~inside
            slot = 2 * pid_r + (st >= tile_lo).to(tl.int32)
            tl.store(bnd_ptr + slot[:, None].to(tl.int64) * N_DICT + offs_n[None, :], z,
                     mask=edge[:, None] & mask_n[None, :])
            tl.store(slot_ptr + slot, seg + 1, mask=edge)
        if MODE == 1:
            store_sums(part_ptr + pid_r.to(tl.int64) * NF * N_DICT + offs_n, N_DICT, mask_n,
                       s_z, s_zz, s_zy, s_zp, s_a, s_ap, c, cnt, sy)


_FP32_OUT: dict = {}     # device type -> how this torch writes a 16-bit GEMM's fp32 output: "out", "copy" or ""


def _fp32_out_mode(x, w) -> str:
    key = str(x.device)
    if key not in _FP32_OUT:
        _FP32_OUT[key] = ""
        for mode in ("out", "copy"):
            try:
                o = torch.empty((1, 1), dtype=torch.float32, device=x.device)
                if mode == "out":
                    torch.mm(x[:1], w[:, :1], out_dtype=torch.float32, out=o)
                else:
                    o.copy_(torch.mm(x[:1], w[:, :1], out_dtype=torch.float32))
                _FP32_OUT[key] = mode
                break
            except (TypeError, RuntimeError):
                continue
    return _FP32_OUT[key]


def gemm_fp32(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out [n, d_sae] fp32 = x @ w accumulated in fp32: cuBLAS with an fp32 output for same-dtype 16-bit CUDA
    operands (torch >= 2.9's out_dtype: no 16-bit rounding of the pre-activations), else an fp32 matmul (CPU, the
    interpreter's tests, mixed dtypes, older torch)."""
    if x.is_cuda and x.dtype == w.dtype and x.dtype in (torch.bfloat16, torch.float16):
        mode = _fp32_out_mode(x, w)
        if mode == "out":
            return torch.mm(x, w, out_dtype=torch.float32, out=out)
        if mode == "copy":
            return out.copy_(torch.mm(x, w, out_dtype=torch.float32))
    return torch.mm(x.float(), w.float(), out=out)


def split_available(xp: torch.Tensor, W: torch.Tensor) -> bool:
    """The split strategy is a tuning candidate for same-dtype 16-bit CUDA operands whose cuBLAS GEMM can write fp32;
    elsewhere it runs only when forced (tests)."""
    return (xp.is_cuda and xp.dtype == W.dtype and xp.dtype in (torch.bfloat16, torch.float16)
            and _fp32_out_mode(xp, W) != "")


def chunk_rows(n_tok: int, d_sae: int, rows: int) -> int:
    """GEMM chunk in tokens: a multiple of rows, at most CHUNK_BYTES of fp32 pre-activations."""
    per = max(rows, (CHUNK_BYTES // (4 * max(d_sae, 1))) // rows * rows)
    return min(per, triton.cdiv(n_tok, rows) * rows)


def split_encode(xp, segs, sae, pool, mode, y, out, thr_t, cfg, gemm=gemm_fp32):
    """gemm(x, W_enc, out) is a parameter for the benchmarks' breakdown only (a no-op GEMM times the pooling pass
    alone)."""
    N = xp.shape[0]
    n_dict = sae.d_sae
    dev = xp.device
    beff = sae.effective_bias()
    if mode == MODE_PRE:                # pre-activations only (TopK): the GEMM straight into out, plus b_eff
        gemm(xp, sae.W_enc, out)
        out += beff[None, :]
        return Launch(out, None, torch.empty((0, n_dict), device=dev), torch.zeros(0, dtype=torch.int32, device=dev))
    ROWS, BN = cfg["ROWS"], cfg["BLOCK_N"]
    n_r = triton.cdiv(N, ROWS)
    part = torch.empty((n_r, len(PART_FIELDS), n_dict), dtype=torch.float64, device=dev) \
        if mode == MODE_STATS else None          # every (range, column block) program writes its whole slice
    bnd = torch.empty((2 * n_r, n_dict), dtype=torch.float32, device=dev)
    slot = torch.zeros(2 * n_r, dtype=torch.int32, device=dev)
    chunk = chunk_rows(N, n_dict, ROWS)
    pre = torch.empty((chunk, n_dict), dtype=torch.float32, device=dev)
    dummy = bnd
    rst, ren = segs.starts[segs.seg], segs.ends[segs.seg]             # per-row sample start and end
    ry = y[segs.seg].float() if mode == MODE_STATS else dummy         # per-row score
    kw = dict(NF=len(PART_FIELDS), MODE=mode, HAS_TOKEN_THR=thr_t is not None, MEAN=pool == "mean",
              ROWS=ROWS, SUB=cfg["SUB"], BLOCK_N=BN, PREFETCH=cfg.get("PREFETCH", 0),
              num_warps=cfg.get("num_warps", 4))
    for r0 in range(0, N, chunk):
        r1 = min(N, r0 + chunk)
        buf = gemm(xp[r0:r1], sae.W_enc, pre[: r1 - r0])
        grid = (triton.cdiv(r1 - r0, ROWS), triton.cdiv(n_dict, BN))
        _pool_pre_kernel[grid](
            buf, beff, sae.feature_threshold(), thr_t if thr_t is not None else dummy,
            segs.seg, rst, ren, ry,
            out if out is not None else dummy, part if part is not None else dummy, bnd, slot,
            r0, r0 // ROWS, N, n_dict, buf.stride(0), out.stride(0) if out is not None else 0, **kw)
    return Launch(out, part, bnd, slot)
