"""Collection: generate answers, score them, and stream per-layer correlation statistics.

For every batch: greedy generation capturing the residual at each SAE's hook over the generation positions, scoring,
then per layer `encode_pool_stats` (SAE features, fused, never storing [tokens, d_sae]; for --ranking mi|fisher|caa
`encode_pool` + RankStats instead, see corrsteer.rankings) and the raw residual's
statistics (mean-pooled, for the no-SAE baselines: raw-residual correlation and mean-difference steering).
Memory does not grow with the number of samples; the statistics are checkpointed after every batch and a rerun with
the same settings resumes after the last finished batch.
Everything stays on the model's device: the captured residuals (in the model's dtype; encode_pool_stats computes in
fp32 when they differ from the SAE's dtype), lengths, scores and the float64 statistics; only a checkpoint copies the
statistics to the host, once per batch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from corrsteer_kernels import CorrStats

from .generate import generate_batch
from .rankings import feed, make_stats


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


def _save_ckpt(path: Path, done: int, col: Collected, key: str):
    tensors = {}
    for kind in ("sae", "raw"):
        for L, st in getattr(col, kind).items():
            tensors.update({f"{kind}.{L}.{k}": v.cpu() for k, v in st.state_dict().items()})
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"done": str(done), "key": key, "rows": json.dumps(col.rows)})
    tmp.replace(path)


def _load_ckpt(path: Path, col: Collected, key: str) -> int:
    if not path.exists():
        return 0
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    if meta.get("key") != key:
        return 0
    t = load_file(str(path))
    for kind in ("sae", "raw"):
        for L, st in getattr(col, kind).items():
            prefix = f"{kind}.{L}."
            st.load_state_dict({k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)})
    col.rows = json.loads(meta["rows"])
    return int(meta["done"])


def collect(lm, bank, task, items, batch_size: int = 16, pool: str = "max", checkpoint=None,
            progress: bool = True, ranking: str = "pearson") -> Collected:
    dev = lm.device
    for L, e in bank:
        if e.sae.device != dev:
            raise ValueError(f"the SAE for layer {L} is on {e.sae.device} but the model is on {dev}: "
                             "load the bank with device=lm.device (or bank.to(lm.device))")
    col = Collected(sae={L: make_stats(ranking, e.sae.d_sae, dev) for L, e in bank},
                    raw={L: CorrStats(lm.d_model, device=dev) for L, e in bank}, rows=[])
    points = {L: e.hook for L, e in bank}
    key = json.dumps([task.name, [it.id for it in items], bank.layers, pool, batch_size]
                     + ([ranking] if ranking != "pearson" else []))
    ckpt = Path(checkpoint) if checkpoint else None
    start = _load_ckpt(ckpt, col, key) if ckpt else 0
    bar = tqdm(total=len(items), initial=start, desc="collect", unit="sample", disable=not progress)
    for i in range(start, len(items), batch_size):
        batch = items[i:i + batch_size]
        out = generate_batch(lm, [it.prompt for it in batch], task.max_new_tokens, capture=list(points.values()),
                             **getattr(task, "gen_kwargs", {}))
        rows = score_rows(task, batch, out.texts)
        y = torch.tensor([r["correct"] for r in rows], dtype=torch.float64).to(dev)
        for L, e in bank:
            h = out.captured[points[L]]
            feed(h, out.lengths, y, e.sae, col.sae[L], pool)
            col.raw[L].update(_mean_pool(h, out.lengths), y)
        col.rows.extend(rows)
        if ckpt:
            _save_ckpt(ckpt, i + len(batch), col, key)
        bar.update(len(batch))
        bar.set_postfix(acc=f"{sum(r['correct'] for r in col.rows) / len(col.rows):.2f}")
    bar.close()
    return col
