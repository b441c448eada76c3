"""Steering ops: add per-row steering vectors to a residual stream, in place.

    steer_add_(hidden, vectors, rows=None, positions=None, backend="auto") -> hidden

hidden [B, T, d] (fp32/fp16/bf16, modified in place); vectors [V, d]; rows [B] ints in [-1, V): row b gets
vectors[rows[b]], -1 leaves it alone; rows=None gives every row vectors[0]. positions [B, T] bool: add only where
true (None: everywhere). The add happens in fp32 and is rounded once to hidden's dtype:
hidden[b, t] = dtype(float32(hidden[b, t]) + float32(vectors[rows[b]])).
Per-row vectors let one batch carry many candidate steerings (e.g. every layer's feature plus the unsteered baseline).

    steering_vectors(sae_or_W_dec, features, coefficients) -> [V, d_in] fp32

features / coefficients: [V] (one feature per vector) or [V, F] (padded with -1), or a list of lists;
vector v = sum_f coefficients[v, f] * W_dec[features[v, f]], summed in float64.
"""
from __future__ import annotations

import torch

from ._common import HAS_TRITON, check_finite, check_float, interpreting, resolve_backend, tl, triton
from .sae_weights import SAEWeights


def steer_add_reference(hidden, vectors, rows=None, positions=None) -> torch.Tensor:
    """Out of place float64 spec, rounded to hidden.dtype at the end."""
    B, T, d = hidden.shape
    rows = torch.zeros(B, dtype=torch.long) if rows is None else rows.long().cpu()
    pos = torch.ones(B, T, dtype=torch.bool) if positions is None else positions.cpu()
    out = hidden.double().cpu().clone()
    for b in range(B):
        if rows[b] >= 0:
            out[b, pos[b]] += vectors[rows[b]].double().cpu().float().double()
    return out.to(hidden.dtype).to(hidden.device)


def _check(hidden, vectors, rows, positions):
    check_float("hidden", hidden, 3)
    if hidden.dtype == torch.float64:
        raise TypeError("hidden must be fp32/fp16/bf16 (a model's residual stream), got float64")
    check_float("vectors", vectors, 2)
    B, T, d = hidden.shape
    if vectors.shape[1] != d:
        raise ValueError(f"vectors are {vectors.shape[1]} wide but hidden is {d} wide")
    if vectors.shape[0] == 0:
        raise ValueError("vectors must hold at least one vector")
    if vectors.device != hidden.device:
        raise ValueError(f"vectors are on {vectors.device} but hidden is on {hidden.device}")
    check_finite("vectors", vectors)
    if rows is None:
        rows = torch.zeros(B, dtype=torch.long, device=hidden.device)
    else:
        rows = torch.as_tensor(rows, device=hidden.device)
        if rows.dim() != 1 or rows.shape[0] != B or rows.dtype.is_floating_point or rows.dtype == torch.bool:
            raise ValueError(f"rows must be an integer tensor of shape [{B}], got {rows.dtype} {tuple(rows.shape)}")
        rows = rows.long()
        if B and (int(rows.min()) < -1 or int(rows.max()) >= vectors.shape[0]):
            raise ValueError(f"rows must lie in [-1, {vectors.shape[0]}), got [{int(rows.min())}, {int(rows.max())}]")
    if positions is not None:
        if positions.dtype != torch.bool or tuple(positions.shape) != (B, T):
            raise ValueError(f"positions must be a bool tensor of shape [{B}, {T}], got "
                             f"{positions.dtype} {tuple(positions.shape)}")
        positions = positions.to(hidden.device)
    return rows, positions


def _steer_torch(hidden, vectors, rows, positions):
    """Dense masked add with torch.where (no nonzero(), so no host sync on a device); unselected entries are copied
    back bit for bit (-0.0 stays -0.0)."""
    if hidden.numel() == 0:
        return
    sel = (rows >= 0)[:, None]
    if positions is not None:
        sel = sel & positions
    added = (hidden.float() + vectors.float()[rows.clamp(min=0)][:, None, :]).to(hidden.dtype)
    hidden.copy_(torch.where(sel[:, :, None], added, hidden))


if HAS_TRITON:

    @triton.jit
    def _steer_add_kernel(h_ptr, v_ptr, rows_ptr, pos_ptr, T, D, stride_hb, stride_ht, stride_vr, stride_pb,
                          HAS_POS: tl.constexpr, RNE_BF16: tl.constexpr, BLOCK_T: tl.constexpr,
                          BLOCK_D: tl.constexpr):
        # grid (B, cdiv(T, BLOCK_T)): one program adds one row's vector to a block of its positions, all of d.
        b = tl.program_id(0)
        r = tl.load(rows_ptr + b)
        if r >= 0:
            offs_t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
            keep = offs_t < T
            if HAS_POS:
                keep = keep & (tl.load(pos_ptr + b.to(tl.int64) * stride_pb + offs_t, mask=keep, other=0) != 0)
            for d0 in range(0, D, BLOCK_D):
                offs_d = d0 + tl.arange(0, BLOCK_D)
                mask_d = offs_d < D
                v = tl.load(v_ptr + r.to(tl.int64) * stride_vr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
                ptrs = h_ptr + b.to(tl.int64) * stride_hb + offs_t[:, None] * stride_ht + offs_d[None, :]
                m = keep[:, None] & mask_d[None, :]
                h = tl.load(ptrs, mask=m, other=0.0)
                out = h.to(tl.float32) + v[None, :]
                if RNE_BF16:  # the interpreter truncates fp32 -> bf16; round to nearest even by hand first
                    bits = out.to(tl.uint32, bitcast=True)
                    bits = (bits + (((bits >> 16) & 1) + 0x7FFF)) & 0xFFFF0000
                    out = bits.to(tl.float32, bitcast=True)
                tl.store(ptrs, out.to(h.dtype), mask=m)


def _steer_triton(hidden, vectors, rows, positions):
    B, T, D = hidden.shape
    if B == 0 or T == 0:
        return
    if hidden.stride(2) != 1:
        raise ValueError("backend='triton' needs hidden with a contiguous last dimension")
    vec = vectors.contiguous()
    pos = positions.to(torch.uint8).contiguous() if positions is not None else rows
    BLOCK_T = 16 if interpreting() else 32
    BLOCK_D = 64 if interpreting() else 256
    _steer_add_kernel[(B, triton.cdiv(T, BLOCK_T))](
        hidden, vec, rows.contiguous(), pos, T, D, hidden.stride(0), hidden.stride(1), vec.stride(0),
        pos.stride(0) if positions is not None else 0,
        HAS_POS=positions is not None, RNE_BF16=interpreting() and hidden.dtype == torch.bfloat16,
        BLOCK_T=BLOCK_T, BLOCK_D=BLOCK_D)


def steer_add_(hidden: torch.Tensor, vectors: torch.Tensor, rows=None, positions=None,
               backend: str = "auto", check: bool = True) -> torch.Tensor:
    """Add vectors[rows[b]] to hidden[b, t] where positions[b, t], in place. See the module docstring.

    check=False skips validation (NaN scan of the vectors, range of rows: host syncs on a GPU) for the per-step call
    inside a decode loop; the caller then guarantees what _check would: vectors [V, d] finite on hidden's device,
    rows an int64 tensor [B] in [-1, V) on that device, positions None or bool [B, T]."""
    if check:
        rows, positions = _check(hidden, vectors, rows, positions)
    elif rows is None:
        rows = torch.zeros(hidden.shape[0], dtype=torch.long, device=hidden.device)
    backend = resolve_backend(backend, hidden.device)
    if backend == "reference":
        hidden.copy_(steer_add_reference(hidden, vectors, rows, positions))
    elif backend == "triton":
        _steer_triton(hidden, vectors, rows, positions)
    else:
        _steer_torch(hidden, vectors, rows, positions)
    return hidden


def _as_padded(features, coefficients):
    if isinstance(features, torch.Tensor):
        if features.dtype.is_floating_point or features.dtype == torch.bool:
            raise TypeError(f"features must be integer indices, got {features.dtype}")
        f = features.long().cpu()
        c = torch.as_tensor(coefficients, dtype=torch.float64).cpu()
    else:
        feats = [list(v) if isinstance(v, (list, tuple)) else [v] for v in features]
        coefs = [list(v) if isinstance(v, (list, tuple)) else [v] for v in coefficients]
        if [len(v) for v in feats] != [len(v) for v in coefs]:
            raise ValueError("features and coefficients must have the same structure")
        width = max([len(v) for v in feats] + [1])
        f = torch.tensor([v + [-1] * (width - len(v)) for v in feats], dtype=torch.long).reshape(len(feats), width)
        c = torch.tensor([v + [0.0] * (width - len(v)) for v in coefs], dtype=torch.float64).reshape(len(feats), width)
    if f.dim() == 1:
        f, c = f[:, None], c.reshape(-1)[:, None]
    if f.shape != c.shape:
        raise ValueError(f"features {tuple(f.shape)} and coefficients {tuple(c.shape)} differ in shape")
    return f, c


def steering_vectors(sae, features, coefficients) -> torch.Tensor:
    """[V, d_in] fp32: vector v = sum_f coefficients[v, f] * W_dec[features[v, f]] (features -1 are padding)."""
    W_dec = sae.W_dec if isinstance(sae, SAEWeights) else sae
    if W_dec is None:
        raise ValueError("the SAE has no W_dec: steering needs the decoder")
    check_float("W_dec", W_dec, 2)
    f, c = _as_padded(features, coefficients)
    if f.numel() and (int(f.max()) >= W_dec.shape[0] or int(f.min()) < -1):
        raise ValueError(f"feature indices must lie in [0, {W_dec.shape[0]}) (or -1 for padding)")
    check_finite("coefficients", c)
    c = torch.where(f >= 0, c, torch.zeros_like(c)).to(W_dec.device)
    rows = W_dec[f.clamp(min=0).to(W_dec.device)].double()            # [V, F, d]
    return (c[:, :, None] * rows).sum(1).float()
