"""The command line: generated from the settings dataclasses (help, defaults, errors), every command end to end on
the tiny random model, and `corrsteer run --config` replaying a run exactly."""
import json
from dataclasses import MISSING, fields

import pytest
import torch
from fakes import FakeTask, save_tiny_dirs

from corrsteer.cli import commands
from corrsteer.cli import main as cli
from corrsteer.config import SETTINGS, EvalConfig, GenerateConfig, RunConfig

REQUIRED = {"eval": dict(plan="p.json"), "generate": dict(plan="p.json", prompt="hi"),
            "export": dict(plan="p.json", format="vllm", out="o.json"), "import": dict(vectors="v.gguf", out="p.json"),
            "fetch-model": dict(name="default"), "report": dict(dir="runs/x")}


def _argv(cmd, values: dict) -> list[str]:
    out, positional = [cmd], {f.name for f in fields(SETTINGS[cmd]) if f.metadata["positional"]}
    for name, v in values.items():
        out += [v] if name in positional else [f"--{name.replace('_', '-')}", str(v)]
    return out


@pytest.fixture
def tiny_dirs(tiny_lm, tmp_path, monkeypatch):
    """The tiny model saved as a HF directory, two random SAEs as sae-lens directories, and the fake task."""
    save_tiny_dirs(tiny_lm, tmp_path)
    monkeypatch.setattr(commands, "load_task", lambda cfg: FakeTask(30))
    return tmp_path


def _common(tmp_path):
    return ["--model", str(tmp_path / "model"), "--n-select", "12", "--n-val", "4", "--n-test", "6",
            "--batch-size", "4"]


# ---------------------------------------------------------------------------------------------------------------
# generated interface
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cmd", sorted(SETTINGS))
def test_cli_defaults_equal_dataclass_defaults(cmd):
    cls = SETTINGS[cmd]
    required = REQUIRED.get(cmd, {})
    got = cli.parse_settings(_argv(cmd, required))
    assert type(got) is cls and got == cls(**required)
    for f in fields(cls):                     # nothing but the required options lacks a dataclass default
        assert (f.default is MISSING) == (f.name in required), f.name


@pytest.mark.parametrize("cmd", sorted(SETTINGS))
def test_help_documents_every_option_with_its_default(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([cmd, "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())      # undo argparse's line wrapping
    cls = SETTINGS[cmd]
    for f in fields(cls):
        name = f.name if f.metadata["positional"] else "--" + f.name.replace("_", "-")
        assert name in text, name
        assert " ".join(f.metadata["help"].split()) in text, name
        if f.default is not MISSING and f.default is not None and not isinstance(f.default, bool):
            assert f"[default: {f.default}]" in text, name
    assert ("--config" in text) == cls.replay
    sub = next(a for a in cli.build_parser()._actions if a.dest == "cmd").choices[cmd]
    assert all(a.help for a in sub._actions), [a.dest for a in sub._actions if not a.help]


def test_eval_takes_no_options_it_would_ignore():
    for name in ("pool", "coef", "scale", "variant", "all_positions", "saes"):
        assert name not in {f.name for f in fields(EvalConfig)} | {f.name for f in fields(GenerateConfig)}
    with pytest.raises(SystemExit):
        cli.parse_settings(["eval", "--plan", "p.json", "--pool", "mean"])


@pytest.mark.parametrize("argv, message", [
    (["run", "--pool", "foo"], "--pool must be max or mean, got 'foo'"),
    (["run", "--n-select", "abc"], "--n-select must be an integer, got 'abc'"),
    (["run", "--n-test", "0"], "--n-test must be positive, got 0"),
    (["select", "--variant", "Q"],
     "--variant must be one of S, A, P, N, all (or several of S, A, P, N separated by commas), got 'Q'"),
    (["run", "--layers", "3-x"], "--layers must be a list of layers such as 0-29 or 3,15,27, got '3-x'"),
    (["run", "--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    (["run", "--dtype", "int8"], "--dtype must be one of auto, float32, bfloat16, float16, got 'int8'"),
    (["run", "--scale", "nan"], "--scale must be a finite number, got nan"),
    (["train-sae", "--k", "64", "--d-sae", "32"], "--k must be at most --d-sae (32), got 64"),
    (["eval"], "--plan is required"),
    (["run", "--config", "/nonexistent/config.json"], "--config: no such file /nonexistent/config.json"),
])
def test_bad_values_exit_2_with_one_line_naming_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"corrsteer: error: {message}"
    assert "Traceback" not in err


def test_command_line_overrides_only_the_options_it_gives(tmp_path):
    path = tmp_path / "config.json"
    recorded = RunConfig(pool="mean", n_select=5, all_positions=True, out="runs/x")
    path.write_text(json.dumps(dict(command="run", settings=recorded.to_dict())))
    got = cli.parse_settings(["run", "--config", str(path), "--n-select", "7", "--no-all-positions"])
    assert got == RunConfig(pool="mean", n_select=7, all_positions=False)    # a replay never writes to the old --out
    assert cli.parse_settings(["run", "--config", str(path), "--out", "runs/y"]).out == "runs/y"
    assert cli.parse_settings(["select", "--config", str(path)]).pool == "mean"   # select and run share settings
    path.write_text(json.dumps(dict(command="run", settings={"pool": "mean"})))     # the rest: defaults
    assert cli.parse_settings(["run", "--config", str(path)]) == RunConfig(pool="mean")


@pytest.mark.parametrize("doc, message", [
    (dict(command="eval", settings=dict(plan="p.json")), "sets plan, not options of `corrsteer run` (the file is "
                                                         "from `corrsteer eval`)"),
    (dict(command="run", settings=dict(pool="foo")), "--pool must be max or mean, got 'foo'"),
    (dict(command="run", settings=dict(n_select="12")), "--n-select must be an integer, got '12'"),
    ([1, 2], "has no \"settings\" object: not a corrsteer config.json"),
])
def test_bad_config_files_fail_in_one_line(tmp_path, capsys, doc, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "--config", str(path)])
    assert e.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


# ---------------------------------------------------------------------------------------------------------------
# end to end on the tiny model
# ---------------------------------------------------------------------------------------------------------------
def test_cli_select_eval_generate(tiny_dirs, capsys):
    tmp_path = tiny_dirs
    common = _common(tmp_path)
    assert cli.main(["select", *common, "--saes", str(tmp_path / "saes"), "--variant", "S",
                     "--out", str(tmp_path / "run")]) == 0
    assert "CorrSteer-S: L" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["command"] == "select"
    plan = tmp_path / "run" / "plans" / "S.json"
    assert cli.main(["eval", *common, "--plan", str(plan), "--out", str(tmp_path / "eval")]) == 0
    assert "vs baseline" in capsys.readouterr().out
    recorded = json.loads((tmp_path / "eval" / "config.json").read_text())
    assert recorded["command"] == "eval" and recorded["settings"]["plan"] == str(plan)
    assert cli.main(["generate", "--plan", str(plan), "--model", str(tmp_path / "model"), "--max-new-tokens", "4",
                     "Hello there"]) == 0
    assert "--- steered" in capsys.readouterr().out


def test_run_config_replays_the_run(tiny_dirs, capsys):
    """`corrsteer run --config runs/x/config.json --out runs/y` reproduces runs/x's plans and predictions."""
    tmp_path = tiny_dirs
    x, y = tmp_path / "runs" / "x", tmp_path / "runs" / "y"
    assert cli.main(["run", *_common(tmp_path), "--saes", str(tmp_path / "saes"), "--pool", "mean",
                     "--scale", "2", "--out", str(x)]) == 0
    assert cli.main(["run", "--config", str(x / "config.json"), "--out", str(y)]) == 0
    capsys.readouterr()
    for name in ("plan.json", "plans/S.json", "plans/A.json", "plans/P.json", "predictions.jsonl"):
        assert (x / name).read_bytes() == (y / name).read_bytes(), name
    cx, cy = (json.loads((d / "config.json").read_text()) for d in (x, y))
    assert cy["settings"] == dict(cx["settings"], out=str(y)) and cx["settings"]["pool"] == "mean"
    assert {k: v for k, v in cx.items() if k not in ("settings", "profile")} == \
        {k: v for k, v in cy.items() if k not in ("settings", "profile")}
    for c in (cx, cy):        # each run's own profile: the stages it went through, with wall, CPU and peak RSS
        names = [st["name"] for st in c["profile"]["stages"]]
        assert names[:2] == ["model", "SAEs"] and names[-3:] == ["test", "prompting rows", "report"], names
        assert c["profile"]["peak_rss_mb"] > 0 and c["profile"]["machine"]["logical_cpus"] >= 1


def test_device_and_dtype_reach_the_model_and_the_saes(tiny_dirs):
    cfg = RunConfig(model=str(tiny_dirs / "model"), saes=str(tiny_dirs / "saes"), device="cpu", dtype="bfloat16")
    lm = commands.load_lm(cfg)
    assert next(lm.model.parameters()).dtype == torch.bfloat16
    bank = commands.load_saes(lm, cfg)
    sae = bank[1].sae
    assert sae.W_enc.dtype == sae.W_dec.dtype == torch.bfloat16 and sae.b_enc.dtype == torch.float32
