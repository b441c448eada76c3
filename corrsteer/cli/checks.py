"""Bad input, caught before the model loads wherever possible: every check raises SettingsError with one line
"<what>, <expected>" (the CLI prints `corrsteer: error: <line>` and exits 2). The README's table lists each case."""
from __future__ import annotations

import json
import os
from pathlib import Path

from corrsteer.config import SettingsError

_SAE_ERRORS = (OSError, ValueError, KeyError, TypeError)


class RunError(RuntimeError):
    """The data gave no usable result (not a usage error): `corrsteer: error: <line>`, exit status 1."""


def _first_line(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:200]


def writable_out(out: str) -> Path:
    """--out must be a directory this process can create and write."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".corrsteer-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SettingsError(f"--out {out} is not writable ({e.strerror or _first_line(e)}), expected a directory "
                            "you can create and write to") from None
    return path


def task_file(path: str, flag: str = "--task-file"):
    """A JSONL task file, loaded; missing, unreadable, not UTF-8, empty and malformed files are usage errors."""
    from corrsteer.tasks.task import load_task_file

    p = Path(path)
    if not p.is_file():
        raise SettingsError(f"{flag} {path}: no such file, expected a JSONL task file")
    data = p.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise SettingsError(f"{flag} {path}: line {line} is not UTF-8 (byte 0x{data[e.start]:02x}), expected a "
                            "UTF-8 JSONL file") from None
    try:
        return load_task_file(p)
    except ValueError as e:
        raise SettingsError(f"{flag} {_first_line(e)}, expected one JSON item a line (see README, Tasks)") from None


def task(cfg):
    """The task cfg names (built-in or file)."""
    from corrsteer.tasks.task import get_task

    if cfg.task_file:
        return task_file(cfg.task_file)
    if cfg.task.endswith((".jsonl", ".json")):
        return task_file(cfg.task, "--task")
    try:
        return get_task(cfg.task, seed=cfg.seed)
    except ValueError as e:
        raise SettingsError(f"--task {_first_line(e)}") from None


def split_fits(task, cfg) -> None:
    """--n-select + --n-val + --n-test must fit in the task."""
    asked = cfg.n_select + cfg.n_val + cfg.n_test
    if asked > len(task.items):
        raise SettingsError(f"--n-select {cfg.n_select} + --n-val {cfg.n_val} + --n-test {cfg.n_test} = {asked} "
                            f"samples, expected at most the {len(task.items)} items of task {task.name!r}")


def _sae_dirs(path: Path) -> list[Path]:
    if (path / "cfg.json").exists():
        return [path]
    return sorted(p for p in path.iterdir() if (p / "cfg.json").exists()) if path.is_dir() else []


def sae_layers(source: str) -> list[int] | None:
    """The layers an SAE directory (or folder of them) covers, read from cfg.json alone; None for other sources."""
    from corrsteer.model.hooks import HookPoint

    if source == "trained" or source.startswith("release:"):
        return None
    path = Path(source)
    dirs = _sae_dirs(path) if path.exists() else []
    if not dirs:
        raise SettingsError(f"--saes {source}: no sae-lens SAE directory there, expected cfg.json + "
                            "sae_weights.safetensors (or a folder of such directories)")
    layers = []
    for d in dirs:
        try:
            meta = json.loads((d / "cfg.json").read_text(encoding="utf-8"))
            hook = (meta.get("metadata") or {}).get("hook_name") or meta.get("hook_name")
            layers.append(HookPoint.parse(hook).layer)
        except (ValueError, AttributeError, TypeError, OSError) as e:
            raise SettingsError(f"--saes {d / 'cfg.json'}: {_first_line(e)}, expected a sae-lens cfg.json naming "
                                "a residual hook such as blocks.3.hook_resid_post") from None
    return sorted(layers)


def layers_covered(wanted: list[int] | None, have: list[int], text: str | None) -> None:
    """Every layer --layers asks for has an SAE, and at least one layer is left."""
    if not have:
        raise SettingsError("no SAE was loaded, expected at least one layer with an SAE")
    missing = [L for L in (wanted or []) if L not in have]
    if missing:
        raise SettingsError(f"--layers {text}: no SAE for layer{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(map(str, missing))}, expected layers the SAEs cover: "
                            f"{', '.join(map(str, have))}")


def load_bank(cfg, lm, device, dtype):
    """The SAE bank; unreadable files, a wrong width or hook, and layers without an SAE are usage errors."""
    from corrsteer.sae.bank import load_bank as _load

    try:
        bank = _load(cfg.saes, lm=lm, layers=cfg.layer_list, sae_dir=cfg.sae_dir, device=device, dtype=dtype)
    except _SAE_ERRORS as e:
        raise SettingsError(f"--saes {cfg.saes}: {_first_line(e)}, expected sae-lens SAEs (cfg.json + "
                            f"sae_weights.safetensors) for {lm.name}") from None
    except Exception as e:           # safetensors' own error type for a damaged weights file
        if type(e).__name__ != "SafetensorError":
            raise
        raise SettingsError(f"--saes {cfg.saes}: a weights file is damaged ({_first_line(e)}), expected "
                            "sae-lens SAEs (cfg.json + sae_weights.safetensors)") from None
    layers_covered(cfg.layer_list, bank.layers, cfg.layers)
    return bank


def plan_file(path: str):
    """A steering plan loaded from --plan; a missing or corrupt file is a usage error."""
    from corrsteer.model.steer import SteeringPlan

    try:
        plan = SteeringPlan.load(path)
        plan.hook_vectors()
    except FileNotFoundError:
        raise SettingsError(f"--plan {path}: no such file, expected a plan.json written by corrsteer run or "
                            "select") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise SettingsError(f"--plan {path} is not a steering plan ({_first_line(e)}), expected a plan.json "
                            "written by corrsteer run or select") from None
    return plan


def plan_fits(plan, path: str, lm) -> None:
    """Every layer the plan steers exists in the model, and every vector is the model's width."""
    for e in plan.entries:
        if e.layer >= lm.n_layers or e.layer < 0:
            raise SettingsError(f"--plan {path} steers layer {e.layer}, expected a layer of {lm.name} "
                                f"(0..{lm.n_layers - 1})")
    for hook, v in plan.vectors.items():
        if len(v) != lm.d_model:
            raise SettingsError(f"--plan {path}: the vector at {hook} is {len(v)} wide, expected {lm.name}'s "
                                f"width {lm.d_model}")
