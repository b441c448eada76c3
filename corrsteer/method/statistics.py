"""The method's per-batch statistics: what one batch of generated answers adds to the correlation sums of each layer.

In one pass, from the same encoded tokens: the totals, per-class statistics (one CorrStats per class and layer; the
classes are the items' gold answers where the task has classes: labels, MC letters, refusal's harmful/benign), which
the within-class ranking reads, and statistics against permuted scores (the shuffled-outcome control). The fused op
is called once per (class, permuted score) group of a batch's samples, so every token is still encoded once; the
totals, the per-class sums and the shuffled sums are added from the groups' sums in a fixed order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from corrsteer.method.rank import fused, make_stats
from corrsteer_kernels import (
    CorrStats,
    PreparedBatch,
    encode_pool,
    encode_pool_stats_prepared,
    prepare_batch,
)


def mean_pool(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """fp32 [B, d]: the mean of h [B, T, d] over each row's first lengths[b] positions (on h's device)."""
    T = h.shape[1]
    lengths = lengths.to(h.device)
    valid = (torch.arange(T, device=h.device)[None, :] < lengths[:, None]).float()
    return (h.float() * valid[:, :, None]).sum(1) / lengths.clamp(min=1)[:, None].float()


def permuted_scores(y: list[float], seed: int, batch: int, cls: list[int] | None = None) -> list[float]:
    """The shuffled-outcome control's scores of one batch: y permuted within each class of the batch (cls: the
    samples' classes; None: one class), so each class keeps its share of right answers and the within-class ranking
    sees no signal. Seeded by (seed, batch index) alone, so any number of processes and a resumed run draw the same
    one. (A permutation over the whole split cannot be applied in one streaming pass: a sample's partner may not be
    generated yet.)"""
    g = torch.Generator().manual_seed(1_000_003 * seed + batch)
    cls = [0] * len(y) if cls is None else cls
    out = list(y)
    for c in sorted(set(cls)):
        members = [b for b, k in enumerate(cls) if k == c]
        for b, i in zip(members, torch.randperm(len(members), generator=g).tolist()):
            out[b] = y[members[i]]
    return out


def batch_groups(cls: list[int], y_perm: list[float]) -> list[tuple[int, float, list[int]]]:
    """(class, permuted score, samples) for each distinct (class, permuted score) of a batch, in sorted order: the
    sample sets the fused op is called on, so every token is encoded once and both the per-class and the
    shuffled-outcome sums follow from the groups' sums."""
    groups: dict = {}
    for b, key in enumerate(zip(cls, y_perm)):
        groups.setdefault(key, []).append(b)
    return [(c, yp, members) for (c, yp), members in sorted(groups.items())]


def _token_index(lengths: list[int], T: int, members: list[int]) -> torch.Tensor:
    """Rows of the flattened [B * T, d] residuals holding the generated tokens of `members`, in order."""
    parts = [torch.arange(b * T, b * T + lengths[b]) for b in members]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


class Group(NamedTuple):
    """One (class, permuted score) group of a batch's samples: its class, permuted score, token rows of the
    flattened [B * T, d] residuals and its PreparedBatch (lengths, scores, their sums and the fused op's segments,
    on the model's device)."""
    cls: int
    score: float
    tokens: torch.Tensor
    batch: PreparedBatch


@dataclass
class BatchGroups:
    """What every layer of one batch reads, found once per batch: its groups, and each class's sample rows (the
    unfused rankings' per-class updates)."""
    groups: list[Group]
    class_rows: list[torch.Tensor]

    @classmethod
    def of(cls, lengths: list[int], T: int, y: torch.Tensor, classes: list[int], n_classes: int,
           y_perm: list[float]) -> "BatchGroups":
        dev = y.device
        lens = torch.tensor(lengths, dtype=torch.long)
        groups = []
        for c, yp, members in batch_groups(classes, y_perm):
            sel = torch.tensor(members, dtype=torch.long)
            tokens = _token_index(lengths, T, members)
            groups.append(Group(c, yp, tokens.to(dev), prepare_batch(lens[sel].to(dev), y.index_select(0, sel.to(dev)),
                                                                     n_tokens=tokens.shape[0], check=False)))
        rows = [torch.tensor([b for b, k in enumerate(classes) if k == c], dtype=torch.long, device=dev)
                for c in range(n_classes)]
        return cls(groups, rows)


def group_stats(h: torch.Tensor, prepared: BatchGroups, sae, pool: str) -> list[CorrStats]:
    """One fresh CorrStats per group (the per-layer fused op on the group's samples of h [B, T, d]: the group's
    PreparedBatch was built once for all layers)."""
    flat = h.reshape(-1, h.shape[-1])
    out = []
    for g in prepared.groups:
        st = CorrStats(sae.d_sae, device=h.device)
        encode_pool_stats_prepared(flat.index_select(0, g.tokens), g.batch, sae, st, pool=pool)
        out.append(st)
    return out


def _sum(parts: list[CorrStats], d: int, device) -> CorrStats:
    total = CorrStats(d, device=device)
    for st in parts:                      # a fixed order: the same float64 sums in any process
        total.merge(st)
    return total


def shuffled_from_groups(parts: list[CorrStats], groups, y_perm: torch.Tensor) -> CorrStats:
    """Statistics against the permuted scores from the groups' sums (every sample of a group has the same permuted
    score), merged in group order."""
    st = CorrStats(parts[0].d_sae, device=parts[0].device)
    for part, g in zip(parts, groups):
        st.merge(_with_score(part, g.score))
    return st


def _with_score(g: CorrStats, yp: float) -> CorrStats:
    """g's statistics as if every one of its samples had score yp (pooled SAE activations are never negative, so
    sum_z_active_pos = sum_z_pos)."""
    out = CorrStats(g.d_sae, device=g.device)
    out.shift.copy_(g.shift)
    out.has_shift.copy_(g.has_shift)
    out.features.copy_(g.features)
    out.sum_dzy.copy_(g.sum_dz * yp)
    pos = float(yp > 0)
    for name, v in (("sum_z_pos", g.sum_z), ("sum_z_active_pos", g.sum_z), ("n_active_pos", g.n_active)):
        getattr(out, name).copy_(v * pos)
    n = g.n
    out.scalars.copy_(torch.stack([n, n * yp, n * yp * yp, n * pos]))
    return out


def layer_stats(h, lengths: list[int], y, y_perm, cls: list[int], n_classes: int, sae, pool: str, ranking: str,
                prepared: BatchGroups | None = None):
    """One layer of one batch: (total, [per class], shuffled, [shuffled per class]) fresh statistics of pooled SAE
    features.

    Fused rankings: encode_pool_stats_prepared once per (class, permuted score) group, every token encoded once; totals,
    classes and shuffled sums are added from the groups in sorted order. Other rankings: encode_pool once, then
    RankStats and CorrStats updates on row subsets. `prepared`: the batch's groups, found once for all its layers
    (built here when not given)."""
    dev, d = h.device, sae.d_sae
    if prepared is None:
        prepared = BatchGroups.of(lengths, h.shape[1], y, cls, n_classes, y_perm)
    y_perm_t = torch.tensor(y_perm, dtype=torch.float64, device=dev)
    if not fused(ranking):
        pooled = encode_pool(h, torch.tensor(lengths, device=dev), sae, pool)
        total = make_stats(ranking, d, dev).update(pooled, y)
        per_class = [CorrStats(d, device=dev).update(pooled.index_select(0, rows), y.index_select(0, rows),
                                                     check=False) for rows in prepared.class_rows]
        shuffled_class = [CorrStats(d, device=dev).update(pooled.index_select(0, rows), y_perm_t.index_select(0, rows),
                                                          check=False) for rows in prepared.class_rows]
        return total, per_class, CorrStats(d, device=dev).update(pooled, y_perm_t, check=False), shuffled_class
    groups = prepared.groups
    parts = group_stats(h, prepared, sae, pool)
    per_class = [_sum([p for p, g in zip(parts, groups) if g.cls == c], d, dev) for c in range(n_classes)]
    shuffled_class = [_shuffled_class(parts, groups, y_perm_t, rows, c, d, dev)
                      for c, rows in enumerate(prepared.class_rows)]
    return _sum(parts, d, dev), per_class, shuffled_from_groups(parts, groups, y_perm_t), shuffled_class


def _shuffled_class(parts, groups, y_perm_t, rows, c: int, d: int, dev) -> CorrStats:
    """The shuffled-outcome statistics of class c's samples alone (from its groups' sums)."""
    mine = [(p, g) for p, g in zip(parts, groups) if g.cls == c]
    if not mine:
        return CorrStats(d, device=dev)
    return shuffled_from_groups([p for p, _ in mine], [g for _, g in mine], y_perm_t.index_select(0, rows))
