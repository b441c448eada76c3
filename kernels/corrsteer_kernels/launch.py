"""What both Triton strategies of the packed-token op share: modes, the per-batch segment layout, the launch result
and the segmented-scan operators they pool with (packed_kernel.py: fused kernel; split_kernel.py: GEMM + pooling
pass)."""
from __future__ import annotations

from typing import NamedTuple

import torch

from ._common import HAS_TRITON, tl, triton

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
    part: torch.Tensor | None     # MODE_STATS: [n_m, NF, d_sae] float64 per-M-tile sums
    bnd: torch.Tensor             # [2 n_m, d_sae] fp32 partial pools of samples crossing tile edges
    slot: torch.Tensor            # [2 n_m] int32: sample + 1 per used boundary slot, 0 = unused


if HAS_TRITON:

    @triton.jit
    def seg_max(v1, f1, v2, f2):
        """Segmented-scan operator: restart at a row flagged as the first of its piece, else running max."""
        return tl.where(f2 != 0, v2, tl.maximum(v1, v2)), f1 | f2

    @triton.jit
    def seg_sum(v1, f1, v2, f2):
        """Segmented-scan operator: restart at a row flagged as the first of its piece, else running sum."""
        return tl.where(f2 != 0, v2, v1 + v2), f1 | f2
