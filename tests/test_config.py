"""Settings dataclasses: checked once when built, device/dtype resolution, config.json round trip."""
import pytest
import torch

from corrsteer.config import GenerateConfig, RunConfig, SelectConfig, TrainSAEConfig
from corrsteer.settings import (
    SettingsError,
    load_settings,
    parse_layers,
    read_config,
    resolve_device_dtype,
    write_config,
)


def test_values_are_checked_when_built():
    assert RunConfig(scale=2).scale == 2.0 and isinstance(RunConfig(scale=2).scale, float)
    with pytest.raises(SettingsError, match=r"^--all-positions must be true or false, got 1$"):
        RunConfig(all_positions=1)
    with pytest.raises(SettingsError, match=r"^--n-val must be zero or more, got -1$"):
        SelectConfig(n_val=-1)
    with pytest.raises(SettingsError, match=r"^--max-new-tokens must be positive, got 0$"):
        GenerateConfig(plan="p.json", prompt="hi", max_new_tokens=0)
    with pytest.raises(SettingsError, match=r"^prompt is required$"):
        load_settings(GenerateConfig, dict(plan="p.json"))


def test_variants_and_layers():
    assert RunConfig().variants == ("S", "A", "P") and RunConfig(variant="P").variants == ("P",)
    assert RunConfig(variant="P,N").variants == ("P", "N") and RunConfig(variant="N").variants == ("N",)
    for bad in ("Q", "P,Q", "all,N", ""):
        with pytest.raises(SettingsError, match="^--variant must be one of S, A, P, N, all"):
            RunConfig(variant=bad)
    assert RunConfig().ranking == "auto" and RunConfig(ranking="within-class").ranking == "within-class"
    assert RunConfig(layers="0-2, 5").layer_list == [0, 1, 2, 5] and RunConfig().layer_list is None
    assert parse_layers("") is None
    assert not RunConfig.select_only and SelectConfig.select_only


def test_resolve_device_dtype():
    cuda = torch.cuda.is_available()
    auto = torch.device("cuda" if cuda else "cpu")
    assert resolve_device_dtype() == (auto, torch.bfloat16 if cuda else torch.float32)
    assert resolve_device_dtype("cpu", "auto") == (torch.device("cpu"), torch.float32)
    assert resolve_device_dtype("cpu", "bfloat16") == (torch.device("cpu"), torch.bfloat16)
    assert RunConfig(device="cpu", dtype="float16").device_dtype() == (torch.device("cpu"), torch.float16)
    if not cuda:
        with pytest.raises(SettingsError, match=r"^--device cuda:1: CUDA is not available on this machine$"):
            resolve_device_dtype("cuda:1", "auto")


def test_config_file_round_trip(tmp_path):
    cfg = TrainSAEConfig(layers="1,3", epochs=1.5, force=True)
    path = write_config(tmp_path / "saes", cfg, model=dict(name="m"))
    assert read_config(path, TrainSAEConfig) == cfg.to_dict()
    assert load_settings(TrainSAEConfig, {"k": "8"}, str(path)) == TrainSAEConfig(layers="1,3", epochs=1.5,
                                                                                  force=True, k=8)
    run = write_config(tmp_path / "run", RunConfig(out="elsewhere"))
    assert read_config(run, RunConfig)["out"] == str(tmp_path / "run")    # out: where it was written


def test_registry_refuses_a_name_twice():
    from corrsteer.settings import registry
    assert list(registry(["a", "bb"], len, "x")) == [1, 2]
    with pytest.raises(ValueError, match="command 'run' is defined twice"):
        registry([RunConfig, RunConfig], lambda c: c.command, "command")
