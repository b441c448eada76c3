"""Collection: generate answers, score them, and stream per-layer correlation statistics.

For every batch: greedy generation capturing the residual at each SAE's hook over the generation positions, scoring,
then per layer `encode_pool_stats_prepared` (SAE features, fused, never storing [tokens, d_sae]; each group's
PreparedBatch built once per batch) and the raw residual's statistics (mean-pooled, for the no-SAE baselines:
raw-residual correlation and mean-difference steering).
Memory does not grow with the number of samples.

In the same pass, from the same encoded tokens: per-class statistics (one CorrStats per class and layer; the
classes are the items' gold answers where the task has classes: labels, MC letters, refusal's harmful/benign), which
the within-class ranking reads, and statistics against permuted scores (the shuffled-outcome control). The fused op
is called once per (class, permuted score) group of a batch's samples, so every token is still encoded once; the
totals, the per-class sums and the shuffled sums are added from the groups' sums in a fixed order.

Each batch's statistics are computed into fresh CorrStats and then added to the running totals in batch order
(0, 1, 2, ...), whatever the number of processes: float64 addition is not associative, so this fixed order is what
makes a torchrun job (rank r computes batches r, r + N, ...; see dist.py) equal bit for bit to one process, and a
resumed run equal to an uninterrupted one.

The batches go through the stage runner's one loop (runner.run_batches): the totals and rows are checkpointed after
every round of batches (one batch in one process); the key covers the model, every SAE (config and weights), every
item (id, prompt, gold), the task's scorer, the generation settings, batch size, pool, the classes and the
permutation seed. A rerun under the same key resumes after the last finished batch.

The statistics have one naming scheme, in stats.safetensors and in the checkpoint alike (stat_names): layer<L> (SAE
features), class<c>.layer<L>, shuffled.layer<L>, shuffled.class<c>.layer<L>, and raw.layer<L> (the residual's, in
the checkpoint only). A checkpoint written under the older names (sae.<L>, class.<L>.<c>, ...) is read as well.
Everything stays on the model's device in one process; with several, each batch's statistics go to the host to be
gathered.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from corrsteer.method.rank import fused, make_stats
from corrsteer.model.generate import generate_batch
from corrsteer.pipeline.runner import Context, prediction_rows, run_batches
from corrsteer.runtime.checkpoint import (
    StageCheckpoint,
    items_identity,
    model_identity,
    sae_identity,
    task_identity,
)
from corrsteer.runtime.dist import SINGLE, Dist, n_batches
from corrsteer_kernels import (
    CorrStats,
    PreparedBatch,
    RankStats,
    encode_pool,
    encode_pool_stats_prepared,
    prepare_batch,
)


@dataclass
class Collected:
    sae: dict            # {layer: CorrStats over SAE features}
    raw: dict            # {layer: CorrStats over residual dimensions (mean-pooled)}
    rows: list           # prediction rows of the collection split
    classes: list = field(default_factory=list)     # the items' classes (gold answers) where the task has classes
    by_class: dict = field(default_factory=dict)    # {layer: [CorrStats over SAE features, one per class]}
    shuffled: dict = field(default_factory=dict)    # {layer: CorrStats against within-batch permuted scores}
    shuffled_by_class: dict = field(default_factory=dict)   # {layer: [the same, one per class]}


def _mean_pool(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """fp32 [B, d]: the mean of h [B, T, d] over each row's first lengths[b] positions (on h's device)."""
    T = h.shape[1]
    lengths = lengths.to(h.device)
    valid = (torch.arange(T, device=h.device)[None, :] < lengths[:, None]).float()
    return (h.float() * valid[:, :, None]).sum(1) / lengths.clamp(min=1)[:, None].float()


def collect_key(lm, bank, task, items, batch_size: int, pool: str, model_id: str | None = None,
                ranking: str = "pearson", seed: int = 0) -> dict:
    """Everything the collected statistics depend on, as {component: digest}."""
    key = dict(model=model_id or model_identity(lm), items=items_identity(items), task=task_identity(task),
               batch_size=batch_size, pool=pool, layers=bank.layers, statistics="corr" if fused(ranking) else "rank",
               classes=task_classes(task, items), shuffle_seed=seed, shuffle="within class and batch",
               generation=repr(sorted(task.gen_kwargs.items())))
    key.update({f"SAE of layer {L}": sae_identity(e) for L, e in bank})
    return key


def _raw_tensors(st: CorrStats) -> dict:
    """The accumulators of a CorrStats (or RankStats) by attribute name: what a batch adds to the totals."""
    extra = ("sum_z2_pos", "hist") if isinstance(st, RankStats) else ()
    return {name: getattr(st, name) for name in ("features", "scalars", "shift", "has_shift") + extra}


def task_classes(task, items) -> list[str]:
    """The classes of the items (their distinct gold answers, sorted) where the task has classes, else []."""
    return sorted({str(it.gold) for it in items}) if task.has_classes else []


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


def _batch_stats(lm, bank, task, batch, pool: str, host: bool, ranking: str = "pearson", classes=(), seed: int = 0,
                 index: int = 0):
    """One batch: (rows, {name: {accumulator: tensor}}) of fresh statistics (on the host when `host`); names as in
    stat_names."""
    points = {L: e.hook for L, e in bank}
    out = generate_batch(lm, [it.prompt for it in batch], task.max_new_tokens, capture=list(points.values()),
                         **task.gen_kwargs)
    rows = prediction_rows(task, batch, out.texts)
    ys = [r["correct"] for r in rows]
    y = torch.tensor(ys, dtype=torch.float64).to(lm.device)
    cls = [classes.index(str(it.gold)) for it in batch] if classes else [0] * len(batch)
    y_perm = permuted_scores(ys, seed, index, cls)
    lengths = out.lengths.to(lm.device)
    # the generation lengths, read once per batch (the one host sync of this loop): every layer's groups are packed
    # with them and folded without re-validating (generate_batch's lengths lie in [0, T], captures are finite)
    host_lengths = lengths.cpu().tolist()
    T = next(iter(out.captured.values())).shape[1]
    prepared = BatchGroups.of(host_lengths, T, y, cls, len(classes), y_perm)       # the same for every layer
    parts = {}
    for L, e in bank:
        h = out.captured[points[L]]
        sae, per_class, shuffled, shuffled_class = layer_stats(h, host_lengths, y, y_perm, cls, len(classes), e.sae,
                                                               pool, ranking, prepared)
        raw = CorrStats(lm.d_model, device=lm.device).update(_mean_pool(h, lengths), y, check=False)
        for name, st in layer_names(L, sae, raw, shuffled, per_class, shuffled_class).items():
            t = _raw_tensors(st)
            parts[name] = {k: v.cpu() for k, v in t.items()} if host else t
    return rows, parts


def layer_names(L: int, sae, raw, shuffled, per_class, shuffled_class) -> dict:
    """{name: statistics} of one layer under the one naming scheme (module docstring)."""
    out = {f"layer{L}": sae, f"raw.layer{L}": raw, f"shuffled.layer{L}": shuffled}
    out.update({f"class{c}.layer{L}": st for c, st in enumerate(per_class)})
    out.update({f"shuffled.class{c}.layer{L}": st for c, st in enumerate(shuffled_class)})
    return out


def stat_names(col: Collected) -> dict:
    """{name: statistics} of everything collection accumulates, by kind: layer<L>, class<c>.layer<L>,
    shuffled.layer<L>, shuffled.class<c>.layer<L>, raw.layer<L>."""
    out = {f"layer{L}": st for L, st in col.sae.items()}
    out.update({f"class{c}.layer{L}": st for L, sts in col.by_class.items() for c, st in enumerate(sts)})
    out.update({f"shuffled.layer{L}": st for L, st in col.shuffled.items()})
    out.update({f"shuffled.class{c}.layer{L}": st for L, sts in col.shuffled_by_class.items()
                for c, st in enumerate(sts)})
    out.update({f"raw.layer{L}": st for L, st in col.raw.items()})
    return out


def stats_tensors(col: Collected) -> dict:
    """stats.safetensors: <name>.<sum> of every statistic but the residual's (stat_names)."""
    return {f"{name}.{k}": v for name, st in stat_names(col).items() if not name.startswith("raw.")
            for k, v in st.state_dict().items()}


def fold_batch(col: Collected, parts: dict) -> None:
    """Add one batch's statistics to the totals (CorrStats.merge: float64, in a fixed order, the same on any device)."""
    named = stat_names(col)
    for name, tensors in parts.items():
        total = named[name]
        part = type(total)(total.d_sae, device=total.device)
        for k, v in tensors.items():
            getattr(part, k).copy_(v)
        total.merge(part)             # shifted sums: the batch's are rebased onto the totals' shift


def _tensors(col: Collected) -> dict:
    return {f"{name}.{k}": v for name, st in stat_names(col).items() for k, v in st.state_dict().items()}


# the checkpoint names of runs before the one scheme -> today's
LEGACY_NAMES = ((r"^sae\.(\d+)\.", r"layer\1."), (r"^raw\.(\d+)\.", r"raw.layer\1."),
                (r"^shuffled\.(\d+)\.", r"shuffled.layer\1."), (r"^class\.(\d+)\.(\d+)\.", r"class\2.layer\1."),
                (r"^shuffled_class\.(\d+)\.(\d+)\.", r"shuffled.class\2.layer\1."))


def renamed_legacy(tensors: dict) -> dict:
    """A collect checkpoint's tensors under today's names (an older checkpoint's sae.<L>.*, class.<L>.<c>.*, ...
    renamed; today's names pass unchanged)."""
    out = {}
    for k, v in tensors.items():
        for old, new in LEGACY_NAMES:
            k = re.sub(old, new, k)
        out[k] = v
    return out


def _restore(col: Collected, tensors: dict) -> None:
    tensors = renamed_legacy(tensors)
    for name, st in stat_names(col).items():
        prefix = f"{name}."
        st.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})


def _restorer(ckpt: StageCheckpoint | None, col: Collected, d: Dist):
    """restore(found) for run_batches: the checkpoint's rows and totals into col; batches already done."""
    def restore(found) -> int:
        done, rows, tensors = found
        try:
            _restore(col, tensors)
        except (KeyError, ValueError) as e:          # a well-formed file with the wrong tensors: not trusted either
            if d.main:
                ckpt.set_aside(e)
            col.rows = []
            for st in stat_names(col).values():
                st.clear()
            return 0
        col.rows = rows
        return done
    return restore


def empty_collected(lm, bank, classes: list[str], ranking: str) -> Collected:
    dev = lm.device
    return Collected(sae={L: make_stats(ranking, e.sae.d_sae, dev) for L, e in bank},
                     raw={L: CorrStats(lm.d_model, device=dev) for L, e in bank}, rows=[], classes=classes,
                     by_class={L: [CorrStats(e.sae.d_sae, device=dev) for _ in classes] for L, e in bank},
                     shuffled={L: CorrStats(e.sae.d_sae, device=dev) for L, e in bank},
                     shuffled_by_class={L: [CorrStats(e.sae.d_sae, device=dev) for _ in classes] for L, e in bank})


def collect(lm, bank, task, items, batch_size: int = 16, pool: str = "max", checkpoint=None,
            progress: bool = True, dist: Dist = SINGLE, model_id: str | None = None,
            ranking: str = "pearson", seed: int = 0) -> Collected:
    for L, e in bank:
        if e.sae.device != lm.device:
            raise ValueError(f"the SAE for layer {L} is on {e.sae.device} but the model is on {lm.device}: "
                             "load the bank with device=lm.device (or bank.to(lm.device))")
    classes = task_classes(task, items)
    col = empty_collected(lm, bank, classes, ranking)
    ckpt = StageCheckpoint(checkpoint, "collect", collect_key(lm, bank, task, items, batch_size, pool, model_id,
                                                              ranking, seed)) if checkpoint else None

    def work(b):
        return _batch_stats(lm, bank, task, items[b * batch_size:(b + 1) * batch_size], pool, host=dist.active,
                            ranking=ranking, classes=classes, seed=seed, index=b)

    def fold(res) -> int:
        rows, parts = res
        fold_batch(col, parts)
        col.rows.extend(rows)
        return len(rows)

    run_batches("collect", n_batches(len(items), batch_size), work, fold, dist=dist, ckpt=ckpt,
                restore=_restorer(ckpt, col, dist), snapshot=lambda: (col.rows, _tensors(col)),
                size=lambda b: len(items[b * batch_size:(b + 1) * batch_size]), unit="sample",
                postfix=lambda: dict(acc=f"{sum(r['correct'] for r in col.rows) / max(1, len(col.rows)):.2f}"),
                progress=progress)
    return col


def collect_stage(ctx: Context, items) -> Collected:
    """The collect stage of a run: the select split's statistics, checkpointed under checkpoints/collect."""
    return collect(ctx.lm, ctx.bank, ctx.task, items, ctx.cfg.batch_size, ctx.cfg.pool, checkpoint=ctx.ckpt("collect"),
                   dist=ctx.dist, model_id=ctx.model_id, ranking=ctx.ranking, seed=ctx.cfg.seed)
