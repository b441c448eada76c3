"""The load stage: the model and the SAE bank a run names, and the input checks that need the loaded model (its layer
count and context length), made before any training or generation: each failure is a SettingsError with one line
"<what>, <expected>".

    load_lm(cfg) / load_saes(lm, cfg)                # the model, then the SAEs (trained first where missing)
    check_run_inputs(lm, task, cfg)                  # every prompt of a run fits the context, before SAEs load

    check_layers(lm, cfg.layer_list, cfg.layers)           # --layers within the model's layers
    check_context(lm, [(label, prompt)], max_new)    # every prompt + the tokens to generate fit the context
    check_prompt_text(prompt)                        # not empty or whitespace only
    check_special_tokens(lm, [(label, prompt)])      # no chat control token (<|im_end|>, ...) in user text
"""
from __future__ import annotations

from corrsteer.config import ModelOptions, RunConfig
from corrsteer.model.lm import LM, load_model
from corrsteer.pipeline.prompting import PromptSet, prompt_set, prompted
from corrsteer.runtime import dist
from corrsteer.sae.bank import SAEBank
from corrsteer.sae.cache import bank_for_run
from corrsteer.settings import SettingsError, format_layers, one_line
from corrsteer.tasks.protocols import bind


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


def load_lm(cfg: ModelOptions, default: str | None = None, device=None, default_from: str = "") -> LM:
    """The model the settings name (or `default`, which `default_from` names: "--plan F"), on `device` (default:
    the settings' device); a model that is not there (no such path, not installed, not cached with the hub
    unreachable, not a model) is a SettingsError naming what gave it."""
    dev, dtype = cfg.device_dtype()
    spec = cfg.model or default
    given = f"--model {spec}" if cfg.model or not default_from else f"{default_from} (built for model {spec})"
    try:
        return load_model(spec, device=device or dev, dtype=dtype)
    except (OSError, ValueError) as e:
        if isinstance(e, SettingsError):
            raise SettingsError(str(e).replace(f"--model {spec}", given, 1)) from None
        raise SettingsError(f"{given}: {one_line(e)}, expected default, gemma3-270m, a .gguf file, a HF model "
                            "directory, or a hub id that is cached or reachable") from None


def load_saes(lm: LM, cfg: RunConfig) -> SAEBank:
    """The SAE bank of a run (trained first where `--saes trained` misses layers, in one process only)."""
    _, dtype = cfg.device_dtype()
    return bank_for_run(lm, cfg, dtype, may_train=dist.env_world() <= 1)


def fits_context(lm, task, items, test_items=(), prompts: PromptSet | None = None) -> None:
    """Every item's prompt, as the model will see it, plus the task's generation length fits the context; so do the
    test items under each prompting row's template (instruction, few-shot examples), named with the row."""
    chat = False if task.gen_kwargs.get("formatted") else None
    check_context(lm, [(f"item {it.id}", it.prompt) for it in items], task.max_new_tokens, chat)
    for variant, template in (prompts.texts() if prompts else {}).items():
        check_context(lm, [(f"item {it.id} with the {variant} prompt", prompted(task, it, template).prompt)
                           for it in test_items], task.max_new_tokens, chat)


def check_run_inputs(lm, task, cfg: RunConfig) -> None:
    """The context checks of corrsteer_run, made right after the model loads (before any SAE is loaded or trained)."""
    task = bind(task, lm)
    sel, val_items, test_items = task.split(cfg.n_select, cfg.n_val, cfg.n_test, seed=cfg.seed)
    fits_context(lm, task, [*sel, *val_items, *test_items], test_items,
                 prompt_set(task, sel, cfg.few_shot, cfg.seed, test_items))
