"""The trained SAEs in the cache: train what is missing (once), record the bank's quality, load a bank for a run.

    train_missing(lm, cfg)         -> quality rows of the layers trained now (prints the quality table)
    bank_for_run(lm, cfg, ...)     -> the SAEBank a run asks for (`--saes trained` trains missing layers first)
    quality_table(rows)            -> the markdown table `train-sae` prints and writes to quality.md

Layout: <sae cache>/<model>/blocks.L.hook_resid_<point>/ (sae-lens directories), quality.md, quality.json and
config.json beside them (corrsteer.paths.sae_cache_dir).
"""
from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

from corrsteer import files
from corrsteer.config import RunConfig, TrainSAEConfig
from corrsteer.files import atomic_write_text
from corrsteer.paths import sae_cache_dir, sae_cache_label
from corrsteer.profile import brief, machine, stage
from corrsteer.sae.bank import SAEBank, layers_covered, load_bank, training_record
from corrsteer.sae.train import bank_quality, train_bank
from corrsteer.settings import SettingsError, format_layers, one_line, write_config

_SAE_ERRORS = (OSError, ValueError, KeyError, TypeError)


def quality_table(rows: list[dict]) -> str:
    """Held-out quality per layer: FVE on the built-in tasks' chat prompts + answers and on docstrings."""
    lines = ["| layer | hook | d_sae | k | FVE chat | FVE docs | L0 | dead | s |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['hook']} | {r['d_sae']} | {r['k']} | {r['fve']:.3f} | "
                     f"{r.get('fve_docs', float('nan')):.3f} | {r['l0']:.1f} | {100 * r['dead']:.1f}% | "
                     f"{r['seconds']:.1f} |")
    fves = [r["fve"] for r in rows]
    docs = [r.get("fve_docs", float("nan")) for r in rows]
    lines.append(f"\nFVE on chat task prompts: min {min(fves):.3f}, median {statistics.median(fves):.3f}; "
                 f"on docstrings: min {min(docs):.3f}, median {statistics.median(docs):.3f}; "
                 f"dead max {100 * max(r['dead'] for r in rows):.1f}%")
    return "\n".join(lines)


def missing_layers(out: Path, layers, hook: str = "post") -> list[int]:
    """The layers without a trained SAE under out."""
    return [L for L in layers if not (out / f"blocks.{L}.hook_resid_{hook}" / "cfg.json").exists()]


def _summary(meta: dict, total: float) -> str:
    return (f"held-out: {meta.get('eval_tokens_chat', meta['eval_tokens'])} tokens of the built-in tasks' prompts "
            f"with the model's answers and {meta.get('eval_tokens_docs', meta['eval_tokens'])} tokens of docstrings, "
            f"none trained on (first position and the shared chat prefix excluded); answers and text "
            f"{meta.get('text_seconds', 0):.0f} s, activations {meta['collect_seconds']:.0f} s; total {total:.0f} s")


def _record(out: Path, lm, cfg: TrainSAEConfig, meta: dict, total: float, rows: list[dict], prof: dict) -> None:
    """quality.md/.json (every layer in the cache, as recorded when it was trained), config.json, and the training's
    profile (machine, wall / CPU / peak RSS per stage) in quality.json and config.json."""
    if not rows:
        return
    prof = dict(machine=machine(), **prof)
    text = (f"# SAEs for {lm.name}\n\n{quality_table(rows)}\n\n{_summary(meta, total)}\n\ntraining: {brief(prof)} "
            f"on {prof['machine']['cpu']} ({cfg.threads or prof['machine']['torch_threads']} threads)\n")
    atomic_write_text(out / "quality.md", text)
    record = training_record([out / r["hook"] for r in rows])
    atomic_write_text(out / "quality.json", json.dumps(dict(model=lm.name, rows=rows, **meta, total_seconds=total,
                                                            profile=prof, training=record), indent=2))
    write_config(out, cfg, model=lm.context(), profile=prof, training=record)


def train_missing(lm, cfg: TrainSAEConfig) -> list[dict]:
    """Train (or resume) the SAEs cfg asks for, print the quality table and record the whole bank (quality.json/.md
    and config.json in the SAE cache), whichever command started the training."""
    t0 = time.time()
    out = sae_cache_dir(lm.name, cfg.sae_dir)
    layers = cfg.layer_list or list(range(lm.n_layers))
    with locked_cache(out, cfg.command, sae_cache_label(out, cfg.sae_dir)):
        with stage("SAE training") as prof:
            done = train_bank(lm, out, layers=layers, point=cfg.hook, cfg=cfg, dataset=cfg.dataset, force=cfg.force,
                              keep_activations=cfg.keep_activations)
        meta, rows = done.meta, done.rows
        total = time.time() - t0
        print(quality_table(rows) + "\n" + _summary(meta, total))
        _record(out, lm, cfg, meta, total, bank_quality(out, point=cfg.hook), prof)
    return rows


@contextlib.contextmanager
def locked_cache(out: Path, command: str, label: str):
    """One process trains into an SAE folder at a time (its .corrsteer.lock, as an output folder's): a second one
    gets one line naming the first, and never sees or deletes the first one's activations."""
    def busy(owner: dict, path: Path) -> str:
        return (f"{label} is in use by another corrsteer process ({files.owner_text(owner)}), expected one "
                f"process training SAEs in a folder at a time: wait for it to finish, or delete {path} if that "
                "process is gone")
    out.mkdir(parents=True, exist_ok=True)
    files.acquire(out, command, busy, label)
    try:
        yield out
    finally:
        files.release(out)


def trained_quality(lm, cfg: TrainSAEConfig) -> list[dict] | None:
    """The recorded quality rows when every layer cfg asks for is trained already (None: some are missing)."""
    out = sae_cache_dir(lm.name, cfg.sae_dir)
    layers = cfg.layer_list or list(range(lm.n_layers))
    if cfg.force or missing_layers(out, layers, cfg.hook):
        return None
    rows = bank_quality(out, layers, cfg.hook)
    return rows if len(rows) == len(layers) else None


def bank_for_run(lm, cfg: RunConfig, dtype, may_train: bool = True) -> SAEBank:
    """The SAE bank a run asks for, on lm's device in `dtype`. `--saes trained` first trains the layers that are
    missing from the cache (once; may_train=False, as under torchrun, makes that a usage error). Unreadable files,
    a wrong width or hook, and layers without an SAE are usage errors (SettingsError)."""
    if cfg.saes == "trained":
        out = sae_cache_dir(lm.name, cfg.sae_dir)
        missing = missing_layers(out, cfg.layer_list or range(lm.n_layers))
        if missing and not may_train:
            raise SettingsError(f"--saes trained: no trained SAEs for {lm.name} at layers {format_layers(missing)} "
                                "yet, expected them trained once beforehand with `corrsteer train-sae` (in one "
                                "process, not under torchrun)")
        if missing:      # only what is missing: trained layers are loaded as they are, not re-evaluated
            print(f"corrsteer: no trained SAEs for {lm.name} at layers {format_layers(missing)} yet: training them "
                  "first (once), as `corrsteer train-sae` would", file=sys.stderr)
            with contextlib.redirect_stdout(sys.stderr):       # stdout is for the report
                train_missing(lm, TrainSAEConfig(model=cfg.model, device=cfg.device, dtype=cfg.dtype,
                                                 sae_dir=cfg.sae_dir, layers=format_layers(missing)))
    try:
        bank = load_bank(cfg.saes, lm=lm, layers=cfg.layer_list, sae_dir=cfg.sae_dir, device=lm.device, dtype=dtype)
    except _SAE_ERRORS as e:
        raise SettingsError(f"--saes {cfg.saes}: {one_line(e, 600)}, expected sae-lens SAEs (cfg.json + "
                            f"sae_weights.safetensors) for {lm.name}") from None
    except Exception as e:           # safetensors' own error type for a damaged weights file
        if type(e).__name__ != "SafetensorError":
            raise
        raise SettingsError(f"--saes {cfg.saes}: a weights file is damaged ({one_line(e)}), expected "
                            "sae-lens SAEs (cfg.json + sae_weights.safetensors)") from None
    layers_covered(cfg.layer_list, bank.layers, cfg.layers)
    return bank
