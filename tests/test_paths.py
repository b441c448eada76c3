"""The cache layout: CORRSTEER_CACHE / CORRSTEER_SAE_DIR, explicit overrides, and the defaults."""
from pathlib import Path

from corrsteer.paths import cache_root, sae_cache_dir


def test_cache_root_order_override_env_home(monkeypatch, tmp_path):
    monkeypatch.delenv("CORRSTEER_CACHE", raising=False)
    assert cache_root() == Path.home() / ".cache" / "corrsteer"
    monkeypatch.setenv("CORRSTEER_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "given") == tmp_path / "given"          # an override beats the environment


def test_sae_cache_dir_is_per_model_unless_overridden(monkeypatch, tmp_path):
    monkeypatch.setenv("CORRSTEER_CACHE", str(tmp_path / "c"))
    monkeypatch.delenv("CORRSTEER_SAE_DIR", raising=False)
    assert sae_cache_dir("m") == tmp_path / "c" / "saes" / "m"
    monkeypatch.setenv("CORRSTEER_SAE_DIR", str(tmp_path / "s"))
    assert sae_cache_dir("m") == tmp_path / "s" / "m"
    assert sae_cache_dir("m", tmp_path / "exact") == tmp_path / "exact"  # the folder itself, no model name added
