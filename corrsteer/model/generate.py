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

Everything lives on the model's device and the decode loop does not wait for it: capture buffers, generated ids and
done-flags are preallocated there, steering vectors are checked and cast once per call, and the host looks at the
done-flags only at check steps (is_check_step). Finished rows keep decoding until every row is done unless
compact=True, which drops them from the batch at a check step (KV cache included; Decoder.compact): a smaller batch
changes the rounding of the live rows' matmuls (1 ulp in the captured residuals on the CPU), so it is off by default
and outputs stay bitwise those of the full batch (and of HF generate). The attention mask of a
decode step is a view of a preallocated one, 4D where transformers would otherwise read the 2D mask back to the host
(sdpa's "any padding?" test). Steps decoded past every row's EOS change nothing: lengths and texts stop at the first
EOS per row, and captured positions past a row's length are zero.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch

from corrsteer.model.hooks import hooked
from corrsteer_kernels import steer_add_

CHECK_EVERY = 8          # after the first few steps the host reads the done-flags every CHECK_EVERY steps
COMPACT_BELOW = 0.75     # compact=True: drop finished rows once the live rows are at most this fraction of the batch


@dataclass
class GenOutput:
    texts: list[str]                      # decoded answer per row (row = prompt * copies + copy), EOS excluded
    lengths: torch.Tensor                 # [R] generation positions per row (tokens generated, EOS included)
    captured: dict = field(default_factory=dict)   # {HookPoint: [R, T, d] model dtype}, zero past lengths[r]


def eos_ids(lm) -> set[int]:
    ids = set()
    for src in (lm.tokenizer.eos_token_id, getattr(lm.model.generation_config, "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(int(i) for i in src)
    return ids


def is_check_step(t: int) -> bool:
    """Whether the host reads the done-flags after decode step t (0-based): steps 2, 4, 8, then every CHECK_EVERY."""
    n = t + 1
    return n in (2, 4) or n % CHECK_EVERY == 0


def _forward_params(model) -> set:
    return set(inspect.signature(model.forward).parameters)


def _cache_kw(model) -> str:
    """transformers >= 5.2x calls the KV cache argument `cache`; earlier releases `past_key_values`."""
    return "cache" if "cache" in _forward_params(model) else "past_key_values"


def _cache_of(out):
    return getattr(out, "cache", None) or out.past_key_values


def _text_config(model):
    cfg = model.config
    return getattr(cfg, "text_config", None) or cfg


def _steer_tables(plans: list[dict], prompts: int, device, dtype) -> dict:
    """{HookPoint: (vectors [V, d] in dtype, rows [R])} from one plan per copy; row r = prompt * copies + copy.
    Checked here once (finite, width) so that the per-step add can skip its checks."""
    copies = len(plans)
    tables = {}
    for hp in {hp for plan in plans for hp in plan}:
        members = [c for c, plan in enumerate(plans) if hp in plan]
        vectors = torch.stack([torch.as_tensor(plans[c][hp]).float().to(device) for c in members])
        if not bool(torch.isfinite(vectors).all()):
            raise ValueError(f"steering vector at {hp.hook_name} is not finite")
        per_copy = torch.full((copies,), -1, dtype=torch.long)
        per_copy[members] = torch.arange(len(members))
        tables[hp] = (vectors.to(dtype), per_copy.repeat(prompts).to(device))
    return tables


def _decode_mask(lm, mask: torch.Tensor, width: int, padded: bool):
    """The attention mask of every decode step, preallocated [R, P + max_new_tokens]: (kind, full tensor).
    kind "none": no padding at all (pass no mask); "4d": a bool [R, 1, 1, W] mask transformers uses as is (sdpa,
    and no sliding window reached), so it never tests the mask for padding on the host; "2d" otherwise."""
    R, P = mask.shape
    full = torch.ones(R, width, dtype=mask.dtype, device=mask.device)
    full[:, :P] = mask
    if not padded:
        return "none", full
    cfg = _text_config(lm.model)
    window = getattr(cfg, "sliding_window", None)
    types = set(getattr(cfg, "layer_types", None) or ["full_attention"])
    if (getattr(cfg, "_attn_implementation", None) == "sdpa" and types <= {"full_attention", "sliding_attention"}
            and (window is None or width <= window)):
        return "4d", full.bool()[:, None, None, :]
    return "2d", full


class Decoder:
    """The live rows of a decode: which rows of the full batch they are, and their per-row state on the device."""

    def __init__(self, R: int, ids, pos, mask_kind: str, mask_full, tables: dict, device):
        self.live = torch.arange(R, device=device)        # full-batch row of each live row
        self.n = R
        self.cur, self.pos = ids[:, -1:], pos[:, -1:]
        self.mask_kind, self.mask_full = mask_kind, mask_full
        self.tables = tables
        self.rows = {hp: rows for hp, (_, rows) in tables.items()}   # steering row table of the live rows
        self.done = torch.zeros(R, dtype=torch.bool, device=device)  # live row has emitted EOS

    def mask(self, kv: int):
        if self.mask_kind == "none":
            return None
        return self.mask_full[..., :kv]

    def compact(self, keep: torch.Tensor, n_keep: int, cache) -> None:
        """Keep only rows `keep` (indices into the live rows, on the device): KV cache, ids, masks, steering rows."""
        self.live = self.live[keep]
        self.n = n_keep
        self.cur, self.pos, self.done = self.cur[keep], self.pos[keep], self.done[keep]
        self.mask_full = self.mask_full[keep]
        self.rows = {hp: rows[self.live] for hp, (_, rows) in self.tables.items()}
        cache.batch_select_indices(keep)


def _prefill(lm, ids, mask, pos, params: set):
    kw = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    out = lm.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1], use_cache=True, **kw)
    return _cache_of(out)


def _check(dec: Decoder, cache, compact: bool) -> bool:
    """The host check (one sync): True when every row is done; with compact, drop the finished rows if enough are."""
    if not compact:
        return bool(dec.done.all())
    n_keep = int((~dec.done).sum())
    if n_keep == 0:
        return True
    if n_keep <= COMPACT_BELOW * dec.n and cache is not None:
        keep = torch.sort(dec.done.to(torch.uint8), stable=True).indices[:n_keep]   # live rows first, in order
        dec.compact(keep, n_keep, cache)
    return False


def _finish(lm, gen, steps: int, eos_t, bufs) -> tuple[list[str], torch.Tensor, dict]:
    """Lengths (up to and including the first EOS), texts, and the captures zeroed past each row's length."""
    R, T = gen.shape
    t = torch.arange(T, device=gen.device)
    is_eos = (gen[:, :, None] == eos_t).any(-1) & (t < steps)
    first = torch.where(is_eos, t, T).min(1).values if T else torch.zeros(R, dtype=torch.long, device=gen.device)
    lengths = torch.where(first < T, first + 1, torch.full_like(first, steps))
    Tmax = int(lengths.max()) if R else 0
    valid = t[:Tmax] < lengths[:, None]
    captured = {hp: torch.where(valid[:, :, None], b[:, :Tmax], torch.zeros((), dtype=b.dtype, device=b.device))
                for hp, b in bufs.items()}
    toks = gen[:, :Tmax].cpu().tolist()
    n_text = (lengths - is_eos.any(1).long()).cpu().tolist()     # the EOS itself is not part of the text
    texts = [lm.tokenizer.decode(row[:k], skip_special_tokens=True) for row, k in zip(toks, n_text)]
    return texts, lengths, captured


def _first_token_mask(allowed, model, dev):
    """fp32 [vocab] on dev: 0 at the allowed token ids, -inf elsewhere (None: no constraint)."""
    if allowed is None:
        return None
    ids = torch.as_tensor(allowed, dtype=torch.long).flatten().to(dev)
    V = model.get_output_embeddings().weight.shape[0]
    if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= V:
        raise ValueError(f"allowed_first_tokens must be non-empty token ids below the vocabulary size {V}")
    mask = torch.full((V,), float("-inf"), device=dev)
    return mask.index_fill_(0, ids, 0.0)


@torch.no_grad()
def generate_batch(lm, prompts: list[str], max_new_tokens: int, *, capture=(), plans: list[dict] | None = None,
                   steer_prompt: bool = False, formatted: bool = False, compact: bool = False,
                   allowed_first_tokens=None) -> GenOutput:
    """Greedy-decode every prompt once per plan. prompts are raw user messages (the chat template is applied unless
    formatted=True). Returns texts, lengths and captured residuals (on the model's device) for rows
    prompt * len(plans) + copy. compact=True drops finished rows from the batch (see the module docstring).
    allowed_first_tokens: token ids the first generated token is restricted to (constrained decoding: the other
    logits of the first step are masked to -inf on the device; later steps are free)."""
    plans = plans or [{}]
    copies, B = len(plans), len(prompts)
    R = B * copies
    tok, model, dev = lm.tokenizer, lm.model, lm.device
    dtype = next(model.parameters()).dtype
    texts = prompts if formatted else [lm.format(p) for p in prompts]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not lm.has_chat_template)
    ids, mask = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
    if ids.shape[1] == 0:
        raise ValueError("empty prompt")
    padded = not bool(enc["attention_mask"].all())          # on the host: tokenizer output
    mask_kind, mask_full = _decode_mask(lm, mask, mask.shape[1] + max_new_tokens, padded)
    tables = _steer_tables(plans, B, dev, dtype)
    bufs = {hp: torch.zeros(R, max_new_tokens, lm.d_model, dtype=dtype, device=dev) for hp in capture}
    gen = torch.full((R, max_new_tokens), -1, dtype=torch.long, device=dev)
    eos_t = torch.tensor(sorted(eos_ids(lm)), dtype=torch.long, device=dev)
    params = _forward_params(model)
    cache_kw = _cache_kw(model)
    state = {"steer": False, "t": -1, "dec": None}
    first_mask = _first_token_mask(allowed_first_tokens, model, dev)

    def steerer(hp):
        vectors = tables[hp][0]

        def fn(h):
            if state["steer"]:
                dec = state["dec"]
                steer_add_(h, vectors, dec.rows[hp] if dec is not None else tables[hp][1], check=False)
        return fn

    def recorder(hp):
        def fn(h):
            if state["t"] >= 0:
                bufs[hp][:, state["t"]].index_copy_(0, state["dec"].live, h[:, -1])
        return fn

    expand = torch.arange(B, device=dev).repeat_interleave(copies)
    steps = 0
    with hooked(lm.layers, {hp: steerer(hp) for hp in tables}), \
            hooked(lm.layers, {hp: recorder(hp) for hp in capture}):
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        shared = not steer_prompt     # steering covers the prompt: then every copy prefills its own
        if not shared:
            ids, mask, pos = ids[expand], mask[expand], pos[expand]
        cache = None
        if ids.shape[1] > 1:
            state["steer"] = steer_prompt
            cache = _prefill(lm, ids, mask, pos, params)
            if shared and copies > 1:
                cache.batch_select_indices(expand)
        if shared:
            ids, pos = ids[expand], pos[expand]
        P = ids.shape[1]
        dec = Decoder(R, ids, pos, mask_kind, mask_full[expand], tables, dev)
        state.update(steer=True, dec=dec)
        for t in range(max_new_tokens):
            state["t"] = t
            out = model(input_ids=dec.cur, attention_mask=dec.mask(P + t), position_ids=dec.pos, use_cache=True,
                        **{cache_kw: cache})
            cache = _cache_of(out)
            logits = out.logits[:, -1]
            if t == 0 and first_mask is not None:
                logits = logits + first_mask
            nxt = logits.argmax(-1)
            gen[:, t].index_copy_(0, dec.live, nxt)
            dec.done |= (nxt[:, None] == eos_t).any(1)
            dec.cur, dec.pos = nxt[:, None], dec.pos + 1
            steps = t + 1
            if t + 1 < max_new_tokens and is_check_step(t) and _check(dec, cache, compact):
                break
    texts, lengths, captured = _finish(lm, gen, steps, eos_t, bufs)
    return GenOutput(texts, lengths, captured)
