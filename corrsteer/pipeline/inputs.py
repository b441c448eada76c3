"""Input checks that need the loaded model (its layer count and context length), made before any training or
generation: each failure is a SettingsError with one line "<what>, <expected>".

    check_layers(lm, cfg.layer_list, cfg.layers)           # --layers within the model's layers
    check_context(lm, [(label, prompt)], max_new)    # every prompt + the tokens to generate fit the context
"""
from __future__ import annotations

from corrsteer.settings import SettingsError, format_layers


def check_layers(lm, layers: list[int] | None, text: str | None) -> None:
    """Every layer --layers names exists in the model."""
    bad = sorted(L for L in (layers or []) if L >= lm.n_layers)
    if bad:
        raise SettingsError(f"--layers {text}: {lm.name} has no layer {format_layers(bad)}, expected layers of "
                            f"{lm.name} (0-{lm.n_layers - 1})")


def check_max_new_tokens(lm, max_new: int, flag: str = "--max-new-tokens") -> None:
    """The tokens to generate fit the model's context on their own."""
    ctx = lm.context_length
    if ctx is not None and max_new >= ctx:
        raise SettingsError(f"{flag} {max_new} does not fit {lm.name}'s context of {ctx} tokens, expected at most "
                            f"{ctx - 1} (with the prompt)")


def check_context(lm, prompts, max_new: int, chat: bool | None = None) -> None:
    """Every (label, prompt), as the model sees it, plus `max_new` generated tokens fits the model's context; the first
    that does not is named."""
    ctx = lm.context_length
    if ctx is None:
        return
    check_max_new_tokens(lm, max_new)
    for label, prompt in prompts:
        n = len(lm.tokenizer(lm.format(prompt, chat), add_special_tokens=False)["input_ids"])
        if n + max_new > ctx:
            raise SettingsError(f"{label} is {n} tokens long, + {max_new} to generate > {lm.name}'s context of "
                                f"{ctx} tokens, expected a prompt of at most {ctx - max_new} tokens")
