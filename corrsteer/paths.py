"""Where corrsteer keeps what it builds once: converted models, trained SAEs, run outputs."""
from __future__ import annotations

import os
from pathlib import Path

from corrsteer.errors import SettingsError
from corrsteer.files import file_in_the_way


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """CORRSTEER_CACHE, else ~/.cache/corrsteer (or an explicit override)."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("CORRSTEER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "corrsteer"


def sae_cache_dir(model_name: str, override: str | os.PathLike | None = None) -> Path:
    """CORRSTEER_SAE_DIR/<model>, else <cache_root>/saes/<model>."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("CORRSTEER_SAE_DIR")
    base = Path(env).expanduser() if env else cache_root() / "saes"
    return base / model_name


def check_cache_dirs(sae_dir: str | os.PathLike | None = None) -> None:
    """CORRSTEER_CACHE, CORRSTEER_SAE_DIR and --sae-dir, where given, are folders or can become folders: a file in
    their place is a SettingsError naming the variable or option, before any work is done."""
    env = [(f"{v}={os.environ[v]}", os.environ[v]) for v in ("CORRSTEER_SAE_DIR", "CORRSTEER_CACHE")
           if os.environ.get(v)]
    given = [(f"--sae-dir {sae_dir}", sae_dir)] + env
    for what, value in given:
        if not value:
            continue
        path = Path(value).expanduser()
        blocker = path if path.exists() and not path.is_dir() else file_in_the_way(path)
        if blocker is not None:
            raise SettingsError(f"{what}: {blocker} is a file, not a folder, expected a folder where corrsteer can "
                                "keep converted models and trained SAEs")


def sae_cache_label(folder: Path, override: str | os.PathLike | None = None) -> str:
    """How the user named the SAE cache `folder`: the option or variable that set it."""
    if override:
        return f"--sae-dir {override}"
    for v in ("CORRSTEER_SAE_DIR", "CORRSTEER_CACHE"):
        if os.environ.get(v):
            return f"the SAE cache {folder} (under {v}={os.environ[v]})"
    return f"the SAE cache {folder}"
