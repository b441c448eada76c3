"""Collection: generate answers, score them, and stream per-layer correlation statistics.

For every batch: greedy generation capturing the residual at each SAE's hook over the generation positions, scoring,
then per layer `encode_pool_stats` (SAE features, fused, never storing [tokens, d_sae]) and the raw residual's
statistics (mean-pooled, for the no-SAE baselines: raw-residual correlation and mean-difference steering).
Memory does not grow with the number of samples.

Each batch's statistics are computed into fresh CorrStats and then added to the running totals in batch order
(0, 1, 2, ...), whatever the number of processes: float64 addition is not associative, so this fixed order is what
makes a torchrun job (rank r computes batches r, r + N, ...; see dist.py) equal bit for bit to one process, and a
resumed run equal to an uninterrupted one.

The totals and rows are checkpointed after every round of batches (one batch in one process); the key covers the
model, every SAE (config and weights), every item (id, prompt, gold), the task's scorer, the generation settings,
batch size and pool. A rerun under the same key resumes after the last finished batch.
Everything stays on the model's device in one process; with several, each batch's statistics go to the host to be
gathered.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from corrsteer.model.generate import generate_batch
from corrsteer.pipeline.checkpoint import (
    StageCheckpoint,
    items_identity,
    log,
    model_identity,
    sae_identity,
    task_identity,
)
from corrsteer.pipeline.dist import SINGLE, Dist, my_batches, n_batches, rounds
from corrsteer.pipeline.rank import feed, make_stats
from corrsteer_kernels import CorrStats, RankStats, encode_pool_stats


@dataclass
class Collected:
    sae: dict            # {layer: CorrStats over SAE features}
    raw: dict            # {layer: CorrStats over residual dimensions (mean-pooled)}
    rows: list           # prediction rows of the collection split


def _mean_pool(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """fp32 [B, d]: the mean of h [B, T, d] over each row's first lengths[b] positions (on h's device)."""
    T = h.shape[1]
    lengths = lengths.to(h.device)
    valid = (torch.arange(T, device=h.device)[None, :] < lengths[:, None]).float()
    return (h.float() * valid[:, :, None]).sum(1) / lengths.clamp(min=1)[:, None].float()


def score_rows(task, items, texts) -> list[dict]:
    rows = []
    for it, text in zip(items, texts):
        pred, y = task.score(it, text)
        rows.append(dict(id=it.id, prompt=it.prompt, output=text, pred=pred, gold=it.gold, correct=float(y)))
    return rows


def collect_key(lm, bank, task, items, batch_size: int, pool: str, model_id: str | None = None,
                ranking: str = "pearson") -> dict:
    """Everything the collected statistics depend on, as {component: digest}."""
    key = dict(model=model_id or model_identity(lm), items=items_identity(items), task=task_identity(task),
               batch_size=batch_size, pool=pool, layers=bank.layers, ranking=ranking,
               generation=repr(sorted(task.gen_kwargs.items())))
    key.update({f"SAE of layer {L}": sae_identity(e) for L, e in bank})
    return key


def _raw_tensors(st: CorrStats) -> dict:
    """The accumulators of a CorrStats (or RankStats) by attribute name: what a batch adds to the totals."""
    extra = ("sum_z2_pos", "hist") if isinstance(st, RankStats) else ()
    return {name: getattr(st, name) for name in ("features", "scalars") + extra}


def _batch_stats(lm, bank, task, batch, pool: str, host: bool, ranking: str = "pearson"):
    """One batch: (rows, {kind.layer: {accumulator: tensor}}) of fresh statistics (on the host when `host`)."""
    points = {L: e.hook for L, e in bank}
    out = generate_batch(lm, [it.prompt for it in batch], task.max_new_tokens, capture=list(points.values()),
                         **task.gen_kwargs)
    rows = score_rows(task, batch, out.texts)
    y = torch.tensor([r["correct"] for r in rows], dtype=torch.float64).to(lm.device)
    parts = {}
    lengths = out.lengths.to(lm.device)
    any_h = next(iter(out.captured.values()))
    T = any_h.shape[1]
    # the valid positions, found once per batch (the one host sync of this loop): every layer is packed with them
    # and folded without re-validating (generate_batch's lengths lie in [0, T], captures are finite model states)
    valid = (torch.arange(T, device=lm.device)[None, :] < lengths[:, None]).flatten().nonzero().squeeze(1)
    for L, e in bank:
        h = out.captured[points[L]]
        sae = make_stats(ranking, e.sae.d_sae, lm.device)
        if ranking == "pearson":
            xp = h.reshape(-1, h.shape[-1]).index_select(0, valid)
            encode_pool_stats(xp, lengths, y, e.sae, sae, pool=pool, check=False)
        else:                          # mi / fisher / caa: pooled values into RankStats (corrsteer.pipeline.rank)
            feed(h, lengths, y, e.sae, sae, pool)
        raw = CorrStats(lm.d_model, device=lm.device).update(_mean_pool(h, lengths), y, check=False)
        for kind, st in (("sae", sae), ("raw", raw)):
            t = _raw_tensors(st)
            parts[f"{kind}.{L}"] = {k: v.cpu() for k, v in t.items()} if host else t
    return rows, parts


def _fold(col: Collected, parts: dict) -> None:
    """Add one batch's statistics to the totals (elementwise float64 additions, the same on any device)."""
    for name, tensors in parts.items():
        kind, L = name.split(".")
        total = _raw_tensors(getattr(col, kind)[int(L)])
        for k, v in tensors.items():
            total[k] += v.to(total[k].device)


def _tensors(col: Collected) -> dict:
    return {f"{kind}.{L}.{k}": v for kind in ("sae", "raw") for L, st in getattr(col, kind).items()
            for k, v in st.state_dict().items()}


def _restore(col: Collected, tensors: dict) -> None:
    for kind in ("sae", "raw"):
        for L, st in getattr(col, kind).items():
            prefix = f"{kind}.{L}."
            st.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})


def _resume(ckpt: StageCheckpoint | None, col: Collected, d: Dist) -> int:
    """Batches already done (rank 0 reads the checkpoint and hands it to the others)."""
    found = ckpt.load() if (ckpt and d.main) else None
    found = d.broadcast(found)
    if found is None:
        return 0
    done, rows, tensors = found
    try:
        _restore(col, tensors)
    except (KeyError, ValueError) as e:          # a well-formed file with the wrong tensors: not trusted either
        if d.main:
            ckpt.set_aside(e)
        col.rows = []
        for st in list(col.sae.values()) + list(col.raw.values()):
            for t in _raw_tensors(st).values():
                t.zero_()
        return 0
    col.rows = rows
    return done


def collect(lm, bank, task, items, batch_size: int = 16, pool: str = "max", checkpoint=None,
            progress: bool = True, dist: Dist = SINGLE, model_id: str | None = None,
            ranking: str = "pearson") -> Collected:
    dev = lm.device
    for L, e in bank:
        if e.sae.device != dev:
            raise ValueError(f"the SAE for layer {L} is on {e.sae.device} but the model is on {dev}: "
                             "load the bank with device=lm.device (or bank.to(lm.device))")
    col = Collected(sae={L: make_stats(ranking, e.sae.d_sae, dev) for L, e in bank},
                    raw={L: CorrStats(lm.d_model, device=dev) for L, e in bank}, rows=[])
    ckpt = None
    if checkpoint:
        key = collect_key(lm, bank, task, items, batch_size, pool, model_id, ranking)
        ckpt = StageCheckpoint(checkpoint, "collect", key)
    n = n_batches(len(items), batch_size)
    start = _resume(ckpt, col, dist)
    if dist.active:
        mine = my_batches(n, dist, start)
        log(f"rank {dist.rank}/{dist.world}: collect batches {mine} of {n} "
            f"({sum(len(items[b * batch_size:(b + 1) * batch_size]) for b in mine)} samples)")
    bar = tqdm(total=len(items), initial=min(len(items), start * batch_size), desc="collect", unit="sample",
               disable=not (progress and dist.main))

    def work(b):
        return _batch_stats(lm, bank, task, items[b * batch_size:(b + 1) * batch_size], pool, host=dist.active,
                            ranking=ranking)

    for done, results in rounds(n, start, dist, work):
        for rows, parts in results:
            _fold(col, parts)
            col.rows.extend(rows)
            bar.update(len(rows))
        if ckpt and dist.main:
            ckpt.save(done, col.rows, _tensors(col))
        bar.set_postfix(acc=f"{sum(r['correct'] for r in col.rows) / max(1, len(col.rows)):.2f}")
    bar.close()
    return col
