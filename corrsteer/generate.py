"""The one generation loop: batched greedy decoding with a KV cache, residual capture and per-row steering.

Collection, validation and test all run through `generate_batch`:
  - capture: the residual at each requested hook point at every *generation position* (the last prompt token, whose
    output is the first answer token, then each decode step), up to and including the step that emits EOS;
  - plans: one steering plan per copy of every prompt ({HookPoint: vector [d]}; {} = unsteered). The prompt minus its
    last token is prefilled once per prompt, then its KV cache is expanded over the copies, so many candidate
    steerings (and the baseline) share one prefill. Steering starts at the last prompt token (or, with
    steer_prompt=True, covers the whole prompt; the prefill is then done per copy).
Position ids follow HF generate's convention for left padding (cumsum of the attention mask - 1) in every forward, so
a prefix prefilled here continues exactly as generate would.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from corrsteer_kernels import steer_add_

from .hooks import HookPoint, hooked


@dataclass
class GenOutput:
    texts: list[str]                      # decoded answer per row (row = prompt * copies + copy), EOS excluded
    lengths: torch.Tensor                 # [R] generation positions per row (tokens generated, EOS included)
    captured: dict = field(default_factory=dict)   # {HookPoint: [R, T, d] float32}, valid up to lengths[r]


def eos_ids(lm) -> set[int]:
    ids = set()
    for src in (lm.tokenizer.eos_token_id, getattr(lm.model.generation_config, "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(int(i) for i in src)
    return ids


def _cache_kw(model) -> str:
    """transformers >= 5.2x calls the KV cache argument `cache`; earlier releases `past_key_values`."""
    import inspect
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out):
    return getattr(out, "cache", None) or out.past_key_values


def _steer_tables(plans: list[dict], prompts: int, device) -> dict:
    """{HookPoint: (vectors [V, d], rows [R])} from one plan per copy; row r = prompt * copies + copy."""
    copies = len(plans)
    tables = {}
    for hp in {hp for plan in plans for hp in plan}:
        members = [c for c, plan in enumerate(plans) if hp in plan]
        vectors = torch.stack([plans[c][hp].float() for c in members]).to(device)
        per_copy = torch.full((copies,), -1, dtype=torch.long)
        per_copy[members] = torch.arange(len(members))
        tables[hp] = (vectors, per_copy.repeat(prompts).to(device))
    return tables


@torch.no_grad()
def generate_batch(lm, prompts: list[str], max_new_tokens: int, *, capture=(), plans: list[dict] | None = None,
                   steer_prompt: bool = False, formatted: bool = False) -> GenOutput:
    """Greedy-decode every prompt once per plan. prompts are raw user messages (the chat template is applied unless
    formatted=True). Returns texts, lengths and captured residuals for rows prompt * len(plans) + copy."""
    plans = plans or [{}]
    copies, B = len(plans), len(prompts)
    R = B * copies
    tok, model, dev = lm.tokenizer, lm.model, lm.device
    texts = prompts if formatted else [lm.format(p) for p in prompts]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not lm.has_chat_template)
    ids, mask = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
    if ids.shape[1] == 0:
        raise ValueError("empty prompt")
    tables = _steer_tables(plans, B, dev)
    state = {"on": False}

    def steerer(hp):
        vectors, rows = tables[hp]

        def fn(h):
            if state["on"]:
                steer_add_(h, vectors if h.dtype == torch.float32 else vectors.to(h.dtype), rows)
            return None
        return fn

    d = lm.d_model
    bufs = {hp: torch.zeros(R, max_new_tokens, d, dtype=torch.float32) for hp in capture}
    step = {"t": 0}

    def recorder(hp):
        def fn(h):
            if step["t"] >= 0:
                bufs[hp][:, step["t"]] = h[:, -1].float().cpu()
            return None
        return fn

    expand = torch.arange(B, device=dev).repeat_interleave(copies)
    fns = {hp: steerer(hp) for hp in tables}
    eos = eos_ids(lm)
    cache_kw = _cache_kw(model)
    with hooked(lm.layers, fns), hooked(lm.layers, {hp: recorder(hp) for hp in capture}):
        cache = None
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        shared = not steer_prompt     # steering covers the prompt: then every copy prefills its own
        if not shared:
            ids, mask, pos = ids[expand], mask[expand], pos[expand]
        if ids.shape[1] > 1:
            state["on"] = steer_prompt
            step["t"] = -1
            out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1],
                        use_cache=True)
            cache = _cache_of(out)
            if shared and copies > 1:
                cache.batch_select_indices(expand)
        if shared:
            ids, mask, pos = ids[expand], mask[expand], pos[expand]
        state["on"] = True
        cur, cur_pos = ids[:, -1:], pos[:, -1:]
        done = torch.zeros(R, dtype=torch.bool, device=dev)
        lengths = torch.zeros(R, dtype=torch.long)
        gen = torch.zeros(R, max_new_tokens, dtype=torch.long)
        for t in range(max_new_tokens):
            step["t"] = t
            out = model(input_ids=cur, attention_mask=mask, position_ids=cur_pos, use_cache=True,
                        **{cache_kw: cache})
            cache = _cache_of(out)
            nxt = out.logits[:, -1].argmax(-1)
            gen[:, t] = nxt.cpu()
            lengths[~done.cpu()] += 1
            done |= torch.isin(nxt, torch.tensor(sorted(eos), device=dev))
            if bool(done.all()):
                break
            cur, cur_pos = nxt[:, None], cur_pos + 1
            mask = torch.cat([mask, torch.ones(R, 1, dtype=mask.dtype, device=dev)], dim=1)
    out_texts = []
    for r in range(R):
        toks = gen[r, :lengths[r]].tolist()
        if toks and toks[-1] in eos:
            toks = toks[:-1]
        out_texts.append(tok.decode(toks, skip_special_tokens=True))
    T = int(lengths.max()) if R else 0
    return GenOutput(out_texts, lengths, {hp: b[:, :T] for hp, b in bufs.items()})
