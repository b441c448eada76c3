"""Residual-stream activations of text, for SAE training: one forward pass feeds every hook point.

`collect_to_disk` streams them to one float16 file per hook point (a few hundred MB for 30 layers x 100k tokens
instead of GBs in memory), so `corrsteer train-sae` keeps its peak memory to the model plus one layer's activations.
The forward stops after the deepest hooked layer (no LM head, no later layers).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from corrsteer.model.hooks import HookPoint, capture, register

STORE_DTYPE = np.float16        # residuals of the default model stay far below fp16's 65504 (position 0 is skipped)


def chat_prefix(lm) -> int:
    """Tokens every chat-formatted sequence starts with (BOS, the default system prompt, the user turn's header):
    at least 1, since position 0 carries attention-sink activations of huge norm."""
    if not lm.has_chat_template:
        return 1
    tok = lm.tokenizer
    a, b = ([tok(tok.apply_chat_template([{"role": "user", "content": c}], tokenize=False),
                 add_special_tokens=False)["input_ids"] for c in ("Hello there.", "7 * 8 = ?")])
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return max(1, n)


def tokenize_chats(lm, chats: list[list[dict]], max_len: int) -> tuple[list[list[int]], int]:
    """Token ids of each chat (template applied, truncated to max_len) and the length of the prefix they all share
    (the system prompt): positions inside it carry the same activations in every sequence, so they are skipped."""
    tok = lm.tokenizer
    seqs = []
    for chat in chats:
        if lm.has_chat_template:
            text = tok.apply_chat_template(chat, tokenize=False)
        else:
            text = "\n\n".join(m["content"] for m in chat)
        seqs.append(tok(text, add_special_tokens=not lm.has_chat_template)["input_ids"][:max_len])
    return seqs, chat_prefix(lm)


def take_tokens(seqs, tokens: int, skip: int = 0) -> list:
    """The first sequences (those longer than `skip`) until they hold `tokens` positions past `skip`."""
    out, n = [], 0
    for s in seqs:
        if n >= tokens:
            break
        if len(s) > skip:
            out.append(s)
            n += len(s) - skip
    return out


def _length_batches(seqs, max_tokens: int, batch_tokens: int, skip: int = 0):
    """Batches of similar-length sequences (little padding), covering the first sequences until they hold
    max_tokens positions past `skip`. Ties keep input order (sorted() is stable), so batches depend on inputs only."""
    chosen = sorted(take_tokens(seqs, max_tokens, skip), key=len, reverse=True)
    batches, cur = [], []
    for s in chosen:
        if cur and len(cur[0]) * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(s)
    return batches + ([cur] if cur else [])


class _Stop(Exception):
    pass


def _forward_batches(lm, seqs, points, max_tokens, skip, batch_tokens, desc, progress=True):
    """Yield ({HookPoint: [n, d] fp32 rows}, n) per batch, positions >= skip, at most max_tokens rows in all."""
    pad = lm.tokenizer.pad_token_id
    layers = lm.layers
    last = max(points, key=lambda hp: (hp.layer, hp.point == "post"))
    n = 0
    bar = tqdm(total=max_tokens, desc=desc, unit="tok", leave=False, disable=not progress, file=sys.stderr)
    for batch in _length_batches(seqs, max_tokens, batch_tokens, skip):
        T = max(len(s) for s in batch)
        ids = torch.full((len(batch), T), pad, dtype=torch.long)
        mask = torch.zeros(len(batch), T, dtype=torch.long)
        for b, s in enumerate(batch):       # right padding: positions count from 0 in every row
            ids[b, :len(s)] = torch.tensor(s)
            mask[b, :len(s)] = 1
        keep = mask.bool().clone()
        keep[:, :skip] = False

        def stop(_h):
            raise _Stop
        with capture(layers, points) as store:
            handle = register(layers, last, stop)       # registered after the capture hooks: runs after them
            try:
                lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                         position_ids=torch.arange(T)[None].expand(len(batch), T).to(lm.device), use_cache=False)
            except _Stop:
                pass
            finally:
                handle.remove()
        take = min(int(keep.sum()), max_tokens - n)
        yield {hp: store[hp][0][keep.to(store[hp][0].device)][:take].float().cpu() for hp in points}, take
        n += take
        bar.update(take)
        if n >= max_tokens:
            break
    bar.close()


@torch.no_grad()
def collect_activations(lm, seqs: list[list[int]], points: list[HookPoint], max_tokens: int, skip: int = 1,
            batch_tokens: int = 2048, desc: str = "activations", progress: bool = True) -> dict:
    """{HookPoint: fp32 [N, d]} for the positions >= skip of the sequences, N <= max_tokens, in memory.

    Sequences are batched by length (longest first), so rows come grouped by sequence length, not in input order."""
    parts = {hp: [] for hp in points}
    for rows, _ in _forward_batches(lm, seqs, points, max_tokens, skip, batch_tokens, desc, progress):
        for hp in points:
            parts[hp].append(rows[hp])
    return {hp: torch.cat(p) if p else torch.empty(0, lm.d_model) for hp, p in parts.items()}


def layer_file(folder, hp: HookPoint) -> Path:
    return Path(folder) / f"{hp.hook_name}.f16"


@torch.no_grad()
def collect_to_disk(lm, seqs: list[list[int]], points: list[HookPoint], max_tokens: int, folder, skip: int = 1,
                    batch_tokens: int = 2048, desc: str = "activations", progress: bool = True) -> int:
    """Like `collect_activations`, but appends each hook point's rows as float16 to <folder>/<hook>.f16; returns the
    row count. Values beyond float16's range (none seen on the default model) are clipped, not turned into inf."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {hp: open(layer_file(folder, hp), "wb") for hp in points}
    lim = float(np.finfo(STORE_DTYPE).max)
    n = 0
    try:
        for rows, take in _forward_batches(lm, seqs, points, max_tokens, skip, batch_tokens, desc, progress):
            for hp in points:
                files[hp].write(rows[hp].clamp(-lim, lim).numpy().astype(STORE_DTYPE).tobytes())
            n += take
    finally:
        for f in files.values():
            f.close()
    return n


def load_layer(folder, hp: HookPoint, d: int) -> torch.Tensor:
    """The fp32 [N, d] rows `collect_to_disk` wrote for hp."""
    a = np.fromfile(layer_file(folder, hp), dtype=STORE_DTYPE)
    return torch.from_numpy(a.reshape(-1, d).astype(np.float32))
