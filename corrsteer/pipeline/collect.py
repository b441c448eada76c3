"""Collection: generate answers, score them, and stream per-layer correlation statistics.

For every batch: greedy generation capturing the residual at each SAE's hook over the generation positions, scoring,
then per layer `encode_pool_stats_prepared` (SAE features, fused, never storing [tokens, d_sae]; each group's
PreparedBatch built once per batch) and the raw residual's statistics (mean-pooled, for the no-SAE baselines:
raw-residual correlation and mean-difference steering).
Memory does not grow with the number of samples.

In the same pass, from the same encoded tokens: per-class statistics and statistics against permuted scores (the
shuffled-outcome control), as corrsteer.method.statistics computes them for one batch.

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

import torch

from corrsteer.method.rank import fused, make_stats
from corrsteer.method.statistics import BatchGroups, layer_stats, mean_pool, permuted_scores
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
from corrsteer_kernels import CorrStats, RankStats


@dataclass
class Collected:
    sae: dict            # {layer: CorrStats over SAE features}
    raw: dict            # {layer: CorrStats over residual dimensions (mean-pooled)}
    rows: list           # prediction rows of the collection split
    classes: list = field(default_factory=list)     # the items' classes (gold answers) where the task has classes
    by_class: dict = field(default_factory=dict)    # {layer: [CorrStats over SAE features, one per class]}
    shuffled: dict = field(default_factory=dict)    # {layer: CorrStats against within-batch permuted scores}
    shuffled_by_class: dict = field(default_factory=dict)   # {layer: [the same, one per class]}


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
        raw = CorrStats(lm.d_model, device=lm.device).update(mean_pool(h, lengths), y, check=False)
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
