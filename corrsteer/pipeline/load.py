"""Input checks that need the loaded model (its layer count and context length), made before any training or
generation: each failure is a SettingsError with one line "<what>, <expected>".

    check_layers(lm, cfg.layer_list, cfg.layers)           # --layers within the model's layers
    check_context(lm, [(label, prompt)], max_new)    # every prompt + the tokens to generate fit the context
    check_prompt_text(prompt)                        # not empty or whitespace only
    check_special_tokens(lm, [(label, prompt)])      # no chat control token (<|im_end|>, ...) in user text
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


def check_prompt_text(prompt: str, label: str = "the prompt") -> None:
    """A prompt holds text: an empty or whitespace-only one would ask the model nothing."""
    if not prompt.strip():
        raise SettingsError(f"{label} is empty, expected text to ask the model")


def control_tokens(lm) -> list[str]:
    """The model's special tokens (chat turn markers such as <|im_start|>, <|im_end|>, end of text, ...), longest
    first."""
    tok = lm.tokenizer
    found = set(getattr(tok, "all_special_tokens", []) or [])
    found |= {t.content for t in (getattr(tok, "added_tokens_decoder", None) or {}).values()
              if getattr(t, "special", False)}
    return sorted((t for t in found if t and t.strip()), key=lambda t: (-len(t), t))


def check_task_tokens(lm, task, cfg) -> None:
    """check_special_tokens on every item of a task file (--task-file, or --task FILE.jsonl)."""
    flag = "--task-file" if cfg.task_file else "--task" if cfg.task.endswith((".jsonl", ".json")) else None
    if flag:
        where = cfg.task_file or cfg.task
        check_special_tokens(lm, [(f"{flag} {where}: item {it.id}", it.prompt) for it in task.items])


def check_special_tokens(lm, prompts) -> None:
    """No (label, prompt) holds one of the model's control tokens: the tokenizer would read it as the real token, so
    a prompt could end the user's turn and write the assistant's (README, Tasks: refused, not escaped)."""
    tokens = control_tokens(lm)
    for label, prompt in prompts:
        hit = next((t for t in tokens if t in prompt), None)
        if hit is not None:
            raise SettingsError(f"{label} holds {hit!r}, one of {lm.name}'s control tokens, expected plain text "
                                "(the tokenizer would read it as the real token and the prompt could open or close "
                                "chat turns)")
