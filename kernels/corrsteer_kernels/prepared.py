"""PreparedBatch: what encode_pool_stats derives from a batch's lengths and scores alone, built once per batch and read
by every layer's call (collection folds 20-40 layers of one batch): lengths on the device, float64 scores, their scalar
sums, and on first use the Triton path's per-token segments (no host sync) and the torch path's host lengths and
sample groups (kept in `cache`, keyed by what they depend on).

    batch = prepare_batch(lengths, y, n_tokens=N)              # once per batch (checks lengths and y)
    encode_pool_stats_prepared(xp_layer, batch, sae_layer, stats_layer, pool)     # per layer
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ._common import check_lengths
from .corr_stats import check_scores, scalar_sums
from .launch import Segments


@dataclass(eq=False)
class PreparedBatch:
    lengths: torch.Tensor      # [B] int64, on the device
    y: torch.Tensor            # [B] float64, on the device
    scalars: torch.Tensor      # float64 [len(SCALAR_FIELDS)]: scalar_sums(y)
    n_tokens: int              # sum(lengths): the packed tokens' rows
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return self.lengths.device

    def empty_samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(count, sum of y) of the samples of length 0 (float64 0-d tensors, on the device; built on first use):
        no kernel tile sees them, yet each adds its pooled 0 to the shifted sums (corr_stats.zero_sums)."""
        if "empty" not in self.cache:
            empty = (self.lengths == 0).double()
            self.cache["empty"] = (empty.sum(), (empty * self.y).sum())
        return self.cache["empty"]

    def segments(self) -> Segments:
        """The Triton path's per-token sample ids and per-sample token ranges (built on first use, no host sync)."""
        if "segments" not in self.cache:
            self.cache["segments"] = Segments.of(self.lengths, self.n_tokens)
        return self.cache["segments"]


def prepare_batch(lengths, y, n_tokens: int | None = None, device=None, check: bool = True) -> PreparedBatch:
    """A PreparedBatch of lengths [B] (ints) and scores y [B] (y > 0 counts as correct) on `device` (lengths' by
    default). n_tokens = sum(lengths) when the caller knows it (else read: one host sync on a GPU). check=False skips
    the checks that read device data (lengths >= 0, y finite)."""
    lengths = torch.as_tensor(lengths)
    device = lengths.device if device is None else torch.device(device)
    if check:
        lengths = check_lengths(lengths, lengths.shape[0] if lengths.dim() == 1 else -1, 2 ** 62)
        y = check_scores(y, lengths.shape[0], device)
    else:
        if lengths.dim() != 1:
            raise ValueError(f"lengths must have shape [B], got {tuple(lengths.shape)}")
        y = torch.as_tensor(y, device=device).double()
        if tuple(y.shape) != (lengths.shape[0],):
            raise ValueError(f"y must have shape [{lengths.shape[0]}], got {tuple(y.shape)}")
    lengths = lengths.to(device).long()
    if n_tokens is None:
        n_tokens = int(lengths.sum())
    return PreparedBatch(lengths, y, scalar_sums(y), int(n_tokens))
