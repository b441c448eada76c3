"""Where corrsteer keeps what it builds once: converted models, trained SAEs, run outputs."""
from __future__ import annotations

import os
from pathlib import Path


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
