"""A fixed EOS schedule for randomly initialised benchmark models, so that their rows do not all run to max_new_tokens.

A random model's greedy output is one token repeated (E1/E2 once decoded "\\n" max_new_tokens times in every row),
so early stopping, compaction of finished rows and ragged capture lengths were never exercised. With the schedule,
the logit of the EOS token is raised above every other wherever the position fed to the model (position_ids of the
last input token) is a multiple of `every`: a row whose prompt has P tokens stops after 1 + (1 - P) mod `every` new
tokens (EOS included), lengths spread over 1..every by prompt length. The rule reads only position_ids, so it gives
the same lengths whatever the batching, padding side or row order (our decode loop compacts finished rows; HF
generate does not), and it runs as device ops (no host sync).

    with eos_schedule(lm, every=8) as eos:     # eos: the token id; lm's generation config stops on it
        generate_batch(lm, prompts, 32)
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from corrsteer.model.generate import eos_ids

BIG = 1e4            # added to the EOS logit (finite: representable in bf16 and fp16)


def schedule_hook(eos: int, every: int):
    """forward hook (with kwargs) of a causal LM: raise the EOS logit at the last position where position_ids % every
    == 0. Needs position_ids among the call's keyword arguments (both our decode loop and HF generate pass them)."""
    def hook(module, args, kwargs, out):
        pos = kwargs.get("position_ids")
        logits = getattr(out, "logits", None)
        if pos is None or logits is None:
            return None
        hit = (pos[:, -1] % every == 0).to(logits.dtype)                   # [B]
        logits[:, -1, eos] += BIG * hit
        return None
    return hook


@contextmanager
def eos_schedule(lm, every: int):
    """Apply the schedule to lm.model for the block (every <= 0: no schedule, yields None). HF generate's stop set
    is narrowed to our EOS id for the block, so both decoders stop on the same token."""
    if every <= 0:
        yield None
        return
    eos = min(eos_ids(lm))
    cfg = lm.model.generation_config
    old = cfg.eos_token_id
    cfg.eos_token_id = eos
    handle = lm.model.register_forward_hook(schedule_hook(eos, every), with_kwargs=True)
    try:
        yield eos
    finally:
        handle.remove()
        cfg.eos_token_id = old


def add_argument(ap) -> None:
    """--eos-every on a benchmark's parser (E1, E2)."""
    ap.add_argument("--eos-every", type=int, default=None,
                    help="random models: EOS schedule period (default max_new_tokens; 0: none)")


def period(args) -> int:
    """The schedule's period for a benchmark run: 0 (none) on the real default model, which stops at its own EOS;
    else --eos-every, by default max_new_tokens."""
    if args.model == "default":
        return 0
    return args.max_new_tokens if args.eos_every is None else args.eos_every


def described(every: int) -> dict:
    """The JSON fields that say which EOS a run's rows stopped on."""
    return dict(eos_every=every or None,
                note="random models: EOS forced where position % eos_every == 0 (bench/eos_schedule.py)"
                if every else "the model's own EOS")


def expected_lengths(prompt_lengths: torch.Tensor, every: int, max_new_tokens: int) -> torch.Tensor:
    """New tokens per row (EOS included) under the schedule, for prompts of the given token counts."""
    return torch.clamp((1 - prompt_lengths) % every + 1, max=max_new_tokens)
