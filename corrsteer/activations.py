"""Residual-stream activations of text, for SAE training: one forward pass feeds every hook point."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .hooks import HookPoint, capture


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
    prefix = 1  # position 0 is always skipped: attention sinks carry huge-norm activations
    if len(seqs) > 1:
        a, b = seqs[0], seqs[1]
        while prefix < min(len(a), len(b)) and a[prefix] == b[prefix]:
            prefix += 1
    return seqs, prefix


def _length_batches(seqs, max_tokens: int, batch_tokens: int):
    """Batches of similar-length sequences (little padding), covering the first sequences up to max_tokens."""
    chosen, total = [], 0
    for s in seqs:
        if total >= max_tokens:
            break
        chosen.append(s)
        total += len(s)
    chosen.sort(key=len, reverse=True)
    batches, cur = [], []
    for s in chosen:
        if cur and len(cur[0]) * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(s)
    return batches + ([cur] if cur else [])


@torch.no_grad()
def collect(lm, seqs: list[list[int]], points: list[HookPoint], max_tokens: int, skip: int = 1,
            batch_tokens: int = 2048, desc: str = "activations") -> dict:
    """{HookPoint: fp32 [N, d]} for the positions >= skip of the sequences, N <= max_tokens.

    Sequences are batched by length (longest first), so rows come grouped by sequence length, not in input order."""
    d = lm.d_model
    bufs = {hp: torch.empty(max_tokens, d, dtype=torch.float32) for hp in points}
    n = 0
    pad = lm.tokenizer.pad_token_id
    bar = tqdm(total=max_tokens, desc=desc, unit="tok", leave=False)
    layers = lm.layers
    for batch in _length_batches(seqs, max_tokens + skip * len(seqs), batch_tokens):
        T = max(len(s) for s in batch)
        ids = torch.full((len(batch), T), pad, dtype=torch.long)
        mask = torch.zeros(len(batch), T, dtype=torch.long)
        for b, s in enumerate(batch):       # right padding: positions count from 0 in every row
            ids[b, :len(s)] = torch.tensor(s)
            mask[b, :len(s)] = 1
        keep = mask.bool().clone()
        keep[:, :skip] = False
        with capture(layers, points) as store:
            lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                     position_ids=torch.arange(T)[None].expand(len(batch), T).to(lm.device), use_cache=False)
        take = min(int(keep.sum()), max_tokens - n)
        for hp in points:
            bufs[hp][n:n + take] = store[hp][0].float().cpu()[keep][:take]
        n += take
        bar.update(take)
        if n >= max_tokens:
            break
    bar.close()
    return {hp: b[:n] for hp, b in bufs.items()}
