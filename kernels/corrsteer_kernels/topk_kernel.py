"""TopK encode -> pool (-> statistics) in one GEMM pass and one launch per chunk, no sort of a row.

    topk_encode(xp, segs, sae, pool, mode, y=None, out=None) -> launch.Launch

xp [N, d_in] packed tokens, segs = launch.Segments of the batch, sae a TopK SAEWeights (k, d_sae), mode MODE_POOL
(out [B, d_sae] fp32 gets every sample that lies inside one M tile) or MODE_STATS (Launch.part [n_m, F, d_sae]
float64 per-M-tile sums); samples crossing a tile edge leave their partial pools in the boundary slots, combined
afterwards as for the packed kernel (combine_kernel.py or packed_kernel.combine_boundary).

Each program owns BLOCK_M whole token rows (every feature of them), so each row's cut is found where the row is:
  - sweep 1 walks the dictionary BLOCK_N features at a time: one GEMM tile (tl.dot over d_in) + b_eff, stored to
    an fp32 scratch [rows, d_sae], and merged into the row's running top KP keys (KP = k rounded up to a power of
    two) by tl.topk over the 2 KP candidates (the tile's own top KP and the running ones): no sort of the row;
  - sweep 2 re-reads the program's own scratch rows (no second GEMM), keeps what ranks in the row's top k and is
    > 0, and pools along the rows with launch.pool_rows (as the packed kernel does).
A key orders (value, column): the order-preserving int32 image of the fp32 bits in the high half, the complement of
the column in the low half; keys are distinct, so exactly k entries of each row rank at or above the k-th key. The
float64 reference (torch.topk) also keeps exactly k; where equal values straddle the cut it picks among them in an
unspecified way, this kernel picks the lower columns (deterministic).

Launches: one per chunk of rows (a chunk's scratch at most split_kernel.CHUNK_BYTES: one chunk at the shapes
collection passes) plus the boundary combine. Deterministic: fixed tiles, fixed reduction order.
"""
from __future__ import annotations

import torch

from ._common import HAS_TRITON, fault_point, interpreting, kernel_options, tl, triton
from .corr_stats import PART_FIELDS
from .launch import MODE_POOL, MODE_STATS, Launch, dot_settings
from .split_kernel import chunk_rows
from .triton_features import require

# not yet timed on a GPU: BLOCK_M is the largest of these that still gives every SM a program (see topk_config)
TOPK_CONFIG = dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=2)
TOPK_BLOCK_M = (64, 32, 16)
INTERPRETER_TOPK = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)
LOW_MASK = tl.constexpr(0xFFFFFFFF) if HAS_TRITON else None    # the low 32 bits of a key: LOW_MASK - column
PAD_KEY = tl.constexpr(-(2 ** 63) + 1) if HAS_TRITON else None  # below every real key: padding never ranks

if HAS_TRITON:
    from .launch import dot_tile, edge_slots, pool_rows

    @triton.jit
    def rank_keys(pre, offs_n, N_DICT):
        """int64 keys [BLOCK_M, BLOCK_N] ordering pre by value, then lower column first; PAD_KEY past N_DICT."""
        bits = pre.to(tl.int32, bitcast=True)
        bits = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)           # negative floats: reverse their order
        low = LOW_MASK - offs_n[None, :].to(tl.int64)
        key = (bits.to(tl.int64) << 32) | low
        return tl.where((offs_n < N_DICT)[None, :], key, PAD_KEY)

    @triton.jit
    def _topk_pool_kernel(x_ptr, w_ptr, beff_ptr, pre_ptr, seg_ptr, start_ptr, end_ptr, y_ptr,
                          out_ptr, part_ptr, bnd_ptr, slot_ptr, ROW0, M0, N_TOK, N_DICT, D, K,
                          stride_xm, stride_xk, stride_wk, stride_wn, stride_om,
                          KP: tl.constexpr, KEEP_ALL: tl.constexpr, NF: tl.constexpr, MODE: tl.constexpr,
                          MEAN: tl.constexpr, COMPUTE: tl.constexpr, F32_DOT: tl.constexpr, PREC: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # this program: M tile M0 + pid of the batch; pre_ptr holds the chunk's rows from ROW0 on
        pid_m = M0 + tl.program_id(0)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        mask_m = offs_m < N_TOK
        edge_slots(seg_ptr, start_ptr, end_ptr, slot_ptr, pid_m, pid_m * BLOCK_M,
                   tl.minimum(pid_m * BLOCK_M + BLOCK_M, N_TOK))
        rows = pre_ptr + (offs_m - ROW0)[:, None].to(tl.int64) * N_DICT
        best = tl.full([BLOCK_M, KP], PAD_KEY, dtype=tl.int64)
        for n0 in range(0, N_DICT, BLOCK_N):                      # sweep 1: the GEMM, once
            offs_n = n0 + tl.arange(0, BLOCK_N)
            mask_n = offs_n < N_DICT
            pre = dot_tile(x_ptr, w_ptr, offs_m, offs_n, N_TOK, N_DICT, D, stride_xm, stride_xk, stride_wk,
                           stride_wn, COMPUTE, F32_DOT, PREC, BLOCK_M, BLOCK_N, BLOCK_K)
            pre = pre + tl.load(beff_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
            tl.store(rows + offs_n[None, :], pre, mask=mask_m[:, None] & mask_n[None, :])
            if not KEEP_ALL:
                cand = tl.topk(rank_keys(pre, offs_n, N_DICT), KP, dim=1)
                best = tl.topk(tl.reshape(tl.join(best, cand), (BLOCK_M, 2 * KP)), KP, dim=1)
        # the k-th largest key of each row (tl.topk returns its KP keys in descending order)
        cut = tl.sum(tl.where((tl.arange(0, KP) == K - 1)[None, :], best, 0), axis=1)
        tl.debug_barrier()                                        # this program's scratch stores before its loads
        for n0 in range(0, N_DICT, BLOCK_N):                      # sweep 2: the same pre-activations, pooled
            offs_n = n0 + tl.arange(0, BLOCK_N)
            mask_n = offs_n < N_DICT
            pre = tl.load(rows + offs_n[None, :], mask=mask_m[:, None] & mask_n[None, :], other=0.0)
            keep = (pre > 0) & mask_m[:, None]
            if not KEEP_ALL:
                keep = keep & (rank_keys(pre, offs_n, N_DICT) >= cut[:, None])
            pool_rows(tl.where(keep, pre, 0.0), offs_m, offs_n, pid_m, N_TOK, N_DICT, seg_ptr, start_ptr, end_ptr,
                      y_ptr, out_ptr, part_ptr, bnd_ptr, slot_ptr, stride_om, NF, MODE, MEAN, BLOCK_M, BLOCK_N)


def topk_strategy() -> str:
    """CORRSTEER_TOPK_STRATEGY: "two_pass" (default until a GPU has timed this kernel: the cut from a pre-activation
    pass + torch.topk, then the packed op), "one_pass" (this kernel) or "auto" (whichever timed faster for the
    shape on a GPU: encode_pool.topk_one_pass). "two_pass" where this Triton has no tl.topk (one warning,
    triton_features.available_strategies)."""
    s = kernel_options().topk_strategy
    return s if s == "two_pass" or require("topk_one_pass") else "two_pass"


def topk_config(k: int, n_tok: int = 0, device=None) -> dict:
    """Block sizes: fixed under the interpreter; on a GPU TOPK_CONFIG with the largest BLOCK_M of TOPK_BLOCK_M that
    gives every SM a program (the grid is one program per BLOCK_M rows); BLOCK_N at least KP (tl.topk's width)."""
    cfg = dict(INTERPRETER_TOPK if interpreting() else TOPK_CONFIG)
    if device is not None and device.type == "cuda" and not interpreting():
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        cfg["BLOCK_M"] = next((m for m in TOPK_BLOCK_M if triton.cdiv(n_tok, m) >= sms), TOPK_BLOCK_M[-1])
    cfg["BLOCK_N"] = max(cfg["BLOCK_N"], triton.next_power_of_2(k))
    return cfg


def topk_encode(xp: torch.Tensor, segs, sae, pool: str, mode: int, y=None, out=None, cfg=None) -> Launch:
    """Launch the one-pass TopK kernel on packed tokens xp [N, d_in] (N >= 1); see the module docstring."""
    if mode not in (MODE_POOL, MODE_STATS):
        raise ValueError("topk_encode pools (MODE_POOL) or folds statistics (MODE_STATS)")
    fault_point("topk")
    N, D = xp.shape
    n_dict, k = sae.d_sae, sae.k
    cfg = dict(cfg or topk_config(k, N, xp.device))
    BM = cfg["BLOCK_M"]
    n_m = triton.cdiv(N, BM)
    dev = xp.device
    part = torch.empty((n_m, len(PART_FIELDS), n_dict), dtype=torch.float64, device=dev) \
        if mode == MODE_STATS else None        # every (tile, column block) is written
    bnd = torch.empty((2 * n_m, n_dict), dtype=torch.float32, device=dev)
    slot = torch.empty(2 * n_m, dtype=torch.int32, device=dev)          # written whole by the kernel (edge_slots)
    chunk = chunk_rows(N, n_dict, BM)
    pre = torch.empty((min(chunk, N), n_dict), dtype=torch.float32, device=dev)
    W = sae.W_enc
    kw = dict(KP=triton.next_power_of_2(min(k, n_dict)), KEEP_ALL=k >= n_dict, NF=len(PART_FIELDS), MODE=mode,
              MEAN=pool == "mean", **dot_settings(xp.dtype, W.dtype), **cfg)
    dummy = bnd
    for r0 in range(0, N, chunk):
        r1 = min(N, r0 + chunk)
        _topk_pool_kernel[(triton.cdiv(r1 - r0, BM),)](
            xp, W, sae.effective_bias(), pre, segs.seg, segs.starts, segs.ends, y if y is not None else dummy,
            out if out is not None else dummy, part if part is not None else dummy, bnd, slot,
            r0, r0 // BM, N, n_dict, D, k, xp.stride(0), xp.stride(1), W.stride(0), W.stride(1),
            out.stride(0) if out is not None else 0, **kw)
    return Launch(out, part, bnd, slot)
