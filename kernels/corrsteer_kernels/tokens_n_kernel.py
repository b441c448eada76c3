"""The tokens-on-N fused strategy ("fused_n"): encode -> activation -> pool (-> statistics) with the operands swapped,
so tokens sit on the accumulator's N axis and pooling and statistics are reductions along N.

    tokens_n_encode(xp, segs, sae, pool, mode, y=None, out=None, thr_t=None, cfg) -> launch.Launch

xp [N, d_in] packed tokens, segs = launch.Segments of the batch. Per tile the kernel computes
    acc [BLOCK_F features, BLOCK_T tokens] = W_enc^T tile [BLOCK_F, d_in] @ x^T tile [d_in, BLOCK_T]
adds b_eff, applies the activation, and pools each sample's piece with one segmented scan along N (running max or
sum, restarting where a sample starts). The batch's tokens are cut into N_CHUNKS chunks whose edges are moved back to
the start of the sample they fall in where that is at most half a chunk away (token tiles aligned to sample
boundaries where possible). A work item is (chunk, feature block); the grid is persistent (NUM_PROGS programs take
work items pid, pid + NUM_PROGS, ...), and each program sweeps its chunk's token tiles in order, carrying the open
sample's running pool from one tile to the next, so only samples crossing a chunk edge leave boundary slots (slot 2c:
the sample entering chunk c, 2c + 1: the one leaving it: the layout of the packed kernel, so the same combine runs).
Statistics are added only where a sample ends (its last token's column), summed in fp32 along N per chunk, stored
as float64 part [N_CHUNKS, F, d_sae] and reduced over chunks in a fixed order: bitwise deterministic for a given
configuration. Where use_tma (CUDA capability >= 9, 16-bit operands, 16-byte aligned rows) the GEMM tiles come
through host-side TMA tensor descriptors, and if that variant fails to build on the GPU at hand the call warns once
and uses masked loads from then on; elsewhere masked loads. (This Triton's interpreter does run host-side
descriptors on fp32 operands: the tests force the TMA variant there.) Not done yet: epilogue subtiling.
"""
from __future__ import annotations

import warnings

import torch

from ._common import HAS_TRITON, interpreting, tl, triton
from .corr_stats import PART_FIELDS
from .launch import MODE_POOL, MODE_STATS, Launch, dot_settings
from .triton_features import require

try:  # host-side TMA descriptors: newer Triton only
    from triton.tools.tensor_descriptor import TensorDescriptor
except Exception:  # pragma: no cover - depends on the install
    TensorDescriptor = None

TOKENS_N_CONFIGS = [dict(TOKENS_N=True, BLOCK_F=128, BLOCK_T=64, BLOCK_K=64, num_warps=8, num_stages=3),
                    dict(TOKENS_N=True, BLOCK_F=128, BLOCK_T=128, BLOCK_K=64, num_warps=8, num_stages=3),
                    dict(TOKENS_N=True, BLOCK_F=256, BLOCK_T=64, BLOCK_K=64, num_warps=8, num_stages=3),
                    dict(TOKENS_N=True, BLOCK_F=64, BLOCK_T=64, BLOCK_K=64, num_warps=4, num_stages=4)]
# under the interpreter: chunks of 2 token tiles, 3 persistent programs, so every path (carry across tiles, chunk
# edges, a program taking several work items) runs at test sizes
_TMA_FAILED: list = []          # set once a TMA launch failed to compile here: masked loads from then on
INTERPRETER_TOKENS_N = dict(TOKENS_N=True, BLOCK_F=16, BLOCK_T=8, BLOCK_K=16, CHUNK_TILES=2, PROGS=3)

if HAS_TRITON:
    from .launch import dot_tile, edge_slots, fold_sums, next_shift, seg_max, seg_sum, shifted, store_sums

    @triton.jit
    def _dot_tokens_n(x_ptr, w_ptr, x_desc, w_desc, offs_f, offs_t, f0, t0, N_DICT, T_HI, D,
                      stride_xm, stride_xk, stride_wk, stride_wn, COMPUTE: tl.constexpr, F32_DOT: tl.constexpr,
                      PREC: tl.constexpr, USE_TMA: tl.constexpr,
                      BLOCK_F: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr):
        """fp32 [BLOCK_F, BLOCK_T] = W_enc[:, offs_f]^T @ x[offs_t, :]^T (tokens at or past T_HI give 0 by mask,
        or, through TMA, are dropped by the caller's masks)."""
        if USE_TMA:
            acc = tl.zeros([BLOCK_F, BLOCK_T], dtype=tl.float32)
            for k0 in range(0, D, BLOCK_K):
                wb = w_desc.load([k0, f0])                 # [BLOCK_K, BLOCK_F]
                xb = x_desc.load([t0, k0])                 # [BLOCK_T, BLOCK_K]
                if F32_DOT:                                # fp32 operands: PREC (tf32x3 on a GPU), as dot_tile
                    acc = tl.dot(tl.trans(wb).to(tl.float32), tl.trans(xb).to(tl.float32), acc, input_precision=PREC)
                else:
                    acc = tl.dot(tl.trans(wb), tl.trans(xb), acc)
            return acc
        else:
            return dot_tile(w_ptr, x_ptr, offs_f, offs_t, N_DICT, T_HI, D, stride_wn, stride_wk, stride_xk, stride_xm,
                            COMPUTE, F32_DOT, PREC, BLOCK_F, BLOCK_T, BLOCK_K)

    @triton.jit
    def _tokens_n_kernel(x_ptr, w_ptr, x_desc, w_desc, beff_ptr, thrf_ptr, thrt_ptr, seg_ptr, start_ptr, end_ptr,
                         y_ptr, cb_ptr, out_ptr, part_ptr, bnd_ptr, slot_ptr, N_DICT, D, N_CHUNKS, N_WORK,
                         stride_xm, stride_xk, stride_wk, stride_wn, stride_om,
                         NF: tl.constexpr, MODE: tl.constexpr, HAS_TOKEN_THR: tl.constexpr, MEAN: tl.constexpr,
                         COMPUTE: tl.constexpr, F32_DOT: tl.constexpr, PREC: tl.constexpr, USE_TMA: tl.constexpr,
                         NUM_PROGS: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_T: tl.constexpr,
                         BLOCK_K: tl.constexpr):
        n_f = tl.cdiv(N_DICT, BLOCK_F)
        for w in range(tl.program_id(0), N_WORK, NUM_PROGS):          # persistent: work items in a fixed order
            c = w // n_f                                               # programs running together share a chunk
            f0 = (w % n_f) * BLOCK_F
            offs_f = f0 + tl.arange(0, BLOCK_F)
            mask_f = offs_f < N_DICT
            beff = tl.load(beff_ptr + offs_f, mask=mask_f, other=0.0)
            thrf = tl.load(thrf_ptr + offs_f, mask=mask_f, other=float("inf"))
            lo = tl.load(cb_ptr + c)
            hi = tl.load(cb_ptr + c + 1)
            edge_slots(seg_ptr, start_ptr, end_ptr, slot_ptr, c, lo, hi)
            carry = tl.zeros([BLOCK_F], dtype=tl.float32)
            s_z = tl.zeros([BLOCK_F], dtype=tl.float32)
            s_zz = tl.zeros([BLOCK_F], dtype=tl.float32)
            s_zy = tl.zeros([BLOCK_F], dtype=tl.float32)
            s_zp = tl.zeros([BLOCK_F], dtype=tl.float32)
            s_a = tl.zeros([BLOCK_F], dtype=tl.float32)
            s_ap = tl.zeros([BLOCK_F], dtype=tl.float32)
            sh = tl.zeros([BLOCK_F], dtype=tl.float32)         # the chunk's shift, set by its first whole sample
            has = tl.zeros([], dtype=tl.int32)
            cnt = tl.zeros([], dtype=tl.float32)
            sy = tl.zeros([], dtype=tl.float32)
            for t0 in range(lo, hi, BLOCK_T):
                offs_t = t0 + tl.arange(0, BLOCK_T)
                mask_t = offs_t < hi
                pre = _dot_tokens_n(x_ptr, w_ptr, x_desc, w_desc, offs_f, offs_t, f0, t0, N_DICT, hi, D,
                                    stride_xm, stride_xk, stride_wk, stride_wn, COMPUTE, F32_DOT, PREC, USE_TMA,
                                    BLOCK_F, BLOCK_T, BLOCK_K) + beff[:, None]
                keep = (pre > thrf[:, None]) & mask_t[None, :]
                if HAS_TOKEN_THR:
                    keep = keep & (pre >= tl.load(thrt_ptr + offs_t, mask=mask_t, other=float("inf"))[None, :])
                act = tl.where(keep, pre, 0.0)
                seg = tl.load(seg_ptr + offs_t, mask=mask_t, other=0)
                st = tl.load(start_ptr + seg, mask=mask_t, other=0)
                en = tl.load(end_ptr + seg, mask=mask_t, other=0)
                flags = tl.broadcast_to(((offs_t == st) | (offs_t == t0)).to(tl.int32)[None, :], (BLOCK_F, BLOCK_T))
                if MEAN:
                    z, _ = tl.associative_scan((act, flags), 1, seg_sum)
                else:
                    z, _ = tl.associative_scan((act, flags), 1, seg_max)
                cont = ((st < t0) & (t0 > lo))[None, :]               # continues the sample open at t0
                if MEAN:
                    z = tl.where(cont, z + carry[:, None], z)
                else:
                    z = tl.where(cont, tl.maximum(z, carry[:, None]), z)
                carry = tl.sum(tl.where((offs_t == tl.minimum(t0 + BLOCK_T, hi) - 1)[None, :], z, 0.0), axis=1)
                last = mask_t & ((offs_t == en - 1) | (offs_t == hi - 1))
                inside = (st >= lo) & (en <= hi)
                whole = last & inside                                  # a sample ends here, inside the chunk
                if MEAN:
                    zw = z * tl.where(whole, 1.0 / tl.maximum(en - st, 1).to(tl.float32), 0.0)[None, :]
                else:
                    zw = tl.where(whole[None, :], z, 0.0)
                if MODE == 1:
                    yr = tl.load(y_ptr + seg, mask=whole, other=0.0).to(tl.float32)
                    sh, has = next_shift(sh, has, zw, whole, offs_t, 1)
                    s_z, s_zz, s_zy, s_zp, s_a, s_ap = fold_sums(s_z, s_zz, s_zy, s_zp, s_a, s_ap, zw,
                                                                 shifted(zw, sh, whole, 1), yr[None, :], 1)
                    cnt += tl.sum(whole.to(tl.float32), axis=0)
                    sy += tl.sum(yr, axis=0)
                else:
                    tl.store(out_ptr + seg[None, :].to(tl.int64) * stride_om + offs_f[:, None], zw,
                             mask=whole[None, :] & mask_f[:, None])
                edge = last & ~inside
                slot = 2 * c + (st >= lo).to(tl.int32)
                tl.store(bnd_ptr + slot[None, :].to(tl.int64) * N_DICT + offs_f[:, None], z,
                         mask=edge[None, :] & mask_f[:, None])
            if MODE == 1:
                store_sums(part_ptr + c.to(tl.int64) * NF * N_DICT + offs_f, N_DICT, mask_f,
                           s_z, s_zz, s_zy, s_zp, s_a, s_ap, sh, cnt, sy)


def chunk_bounds(segs, n_tok: int, n_chunks: int, align: bool = True) -> torch.Tensor:
    """int32 [n_chunks + 1] token edges of the chunks, on the tokens' device, with no host sync: even cuts, each
    moved back to the start of the sample it falls in where that is at most half a chunk away (align)."""
    dev = segs.seg.device
    edges = torch.div(torch.arange(n_chunks + 1, device=dev) * n_tok, n_chunks, rounding_mode="floor")
    if align and n_tok:
        inner = edges[1:-1]
        snap = segs.starts[segs.seg[inner]].long()
        edges[1:-1] = torch.where(inner - snap <= n_tok // (2 * n_chunks), snap, inner)
    return edges.to(torch.int32)


def use_tma(xp: torch.Tensor, W: torch.Tensor) -> bool:
    """TMA descriptors: CUDA capability >= 9 (Hopper), same-dtype 16-bit operands, 16-byte aligned rows, and no
    earlier failure to build them here; never on its own under the interpreter (its tl.dot is wrong on 16-bit
    operands)."""
    if interpreting() or not xp.is_cuda or xp.dtype != W.dtype or xp.dtype not in (torch.bfloat16, torch.float16):
        return False
    if TensorDescriptor is None or not require("fused_n_tma"):
        return False
    if _TMA_FAILED:
        return False
    aligned = all(t.stride(1) == 1 and (t.stride(0) * t.element_size()) % 16 == 0 and t.data_ptr() % 16 == 0
                  for t in (xp, W))
    return aligned and torch.cuda.get_device_capability(xp.device)[0] >= 9


def _descriptors(xp, W, cfg, tma: bool):
    if not tma:
        return xp, W
    return (TensorDescriptor.from_tensor(xp, [cfg["BLOCK_T"], cfg["BLOCK_K"]]),
            TensorDescriptor.from_tensor(W, [cfg["BLOCK_K"], cfg["BLOCK_F"]]))


def work_split(n_tok: int, d_sae: int, cfg: dict, device: torch.device) -> tuple[int, int]:
    """(chunks, persistent programs): under the interpreter CHUNK_TILES token tiles a chunk and PROGS programs; on a
    GPU about two work items per SM, chunks of at least one token tile."""
    n_f = triton.cdiv(d_sae, cfg["BLOCK_F"])
    tiles = max(1, triton.cdiv(n_tok, cfg["BLOCK_T"]))
    if "CHUNK_TILES" in cfg:
        n_c = triton.cdiv(tiles, cfg["CHUNK_TILES"])
        return n_c, min(n_c * n_f, cfg.get("PROGS", n_c * n_f))
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    n_c = max(1, min(tiles, triton.cdiv(2 * sms, n_f)))
    return n_c, min(n_c * n_f, sms)


def tokens_n_encode(xp, segs, sae, pool, mode, y=None, out=None, thr_t=None, cfg=None) -> Launch:
    """Launch the tokens-on-N kernel on packed tokens xp [N, d_in] (N >= 1); see the module docstring."""
    if mode not in (MODE_POOL, MODE_STATS):
        raise ValueError("tokens_n_encode pools (MODE_POOL) or folds statistics (MODE_STATS)")
    cfg = dict(cfg or (INTERPRETER_TOKENS_N if interpreting() else TOKENS_N_CONFIGS[0]))
    N, D = xp.shape
    n_dict, dev, W = sae.d_sae, xp.device, sae.W_enc
    n_c, progs = work_split(N, n_dict, cfg, dev)
    part = torch.empty((n_c, len(PART_FIELDS), n_dict), dtype=torch.float64, device=dev) \
        if mode == MODE_STATS else None        # every (chunk, feature block) work item writes its slice
    bnd = torch.empty((2 * n_c, n_dict), dtype=torch.float32, device=dev)
    slot = torch.empty(2 * n_c, dtype=torch.int32, device=dev)         # written by the kernel, used or not
    dummy = bnd
    args = (sae.effective_bias(), sae.feature_threshold(), thr_t if thr_t is not None else dummy,
            segs.seg, segs.starts, segs.ends, y if y is not None else dummy,
            chunk_bounds(segs, N, n_c, cfg.get("ALIGN", True)), out if out is not None else dummy,
            part if part is not None else dummy, bnd, slot, n_dict, D, n_c, n_c * triton.cdiv(n_dict, cfg["BLOCK_F"]),
            xp.stride(0), xp.stride(1), W.stride(0), W.stride(1), out.stride(0) if out is not None else 0)
    kw = dict(NF=len(PART_FIELDS), MODE=mode, HAS_TOKEN_THR=thr_t is not None, MEAN=pool == "mean",
              **dot_settings(xp.dtype, W.dtype),
              NUM_PROGS=progs, BLOCK_F=cfg["BLOCK_F"], BLOCK_T=cfg["BLOCK_T"], BLOCK_K=cfg["BLOCK_K"],
              **{k: cfg[k] for k in ("num_warps", "num_stages") if k in cfg})
    tma = use_tma(xp, W)
    try:
        _tokens_n_kernel[(progs,)](xp, W, *_descriptors(xp, W, cfg, tma), *args, USE_TMA=tma, **kw)
    except Exception as e:          # the TMA variant has not compiled on this GPU: fall back to masked loads
        if not tma:
            raise
        _TMA_FAILED.append(repr(e))
        warnings.warn(f"corrsteer_kernels: TMA descriptors failed here ({e!r:.200}); using masked loads")
        _tokens_n_kernel[(progs,)](xp, W, xp, W, *args, USE_TMA=False, **kw)
    return Launch(out, part, bnd, slot)
