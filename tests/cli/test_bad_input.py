# ruff: noqa: E501
"""Bad input (docs/bad-input.md): every row ends in one line `corrsteer: error: <what>, <expected>` with exit
status 2 (1 for a run whose data gives no result), never a traceback; rows marked "before the model loads" fail
with the model loader disabled."""
import json

import pytest
import torch
from fakes import FakeTask, save_tiny_dirs, tiny_bank

from corrsteer.cli import commands
from corrsteer.cli import main as cli
from corrsteer.sae.bank import save_sae_dir
from corrsteer.tasks.load import load_task


@pytest.fixture
def env(tiny_lm, tmp_path, monkeypatch):
    save_tiny_dirs(tiny_lm, tmp_path)
    (tmp_path / "file").write_text("")
    return tmp_path


def _no_model(monkeypatch):
    def fail(*a, **kw):
        raise AssertionError("the model was loaded before the input was checked")
    monkeypatch.setattr(commands, "load_lm", fail)


def _fails(argv, capsys, message, code=2, d=None):
    """The command fails with exactly `corrsteer: error: <message>` ({d}: the test's folder), once, and `code`."""
    with pytest.raises(SystemExit) as e:
        code_ret = cli.main(argv)
        raise SystemExit(code_ret)
    err = capsys.readouterr().err
    assert e.value.code == code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1] == "corrsteer: error: " + message.format(d=d), lines[-1]
    assert sum(line.startswith("corrsteer: error: ") for line in lines) == 1, err
    return lines[-1]


def _run(env, *extra, task=("--task-file", None)):
    return ["run", "--model", str(env / "model"), "--saes", str(env / "saes"), "--n-select", "8", "--n-val", "4",
            "--n-test", "4", "--batch-size", "4", "--out", str(env / "out"), *extra]


def _task_file(env, text, encoding="utf-8"):
    p = env / "t.jsonl"
    p.write_bytes(text.encode(encoding))
    return ["--task-file", str(p)]


GOOD = '{"prompt": "Capital of France?", "answer": "Paris"}\n' * 30

# (README row id, extra arguments or a builder of them, message part); all checked before the model loads
ROWS = [
    ("task-unknown", lambda e: ["--task", "nope"], "--task must be one of arithmetic, capitals, mmlu-style, refusal, sentiment, bbq, bbq-ambig, bbq-disambig, gsm8k, harmbench, mmlu, mmlu-pro, simpleqa, xstest (or a .jsonl file), got 'nope'"),
    ("task-file-missing", lambda e: ["--task-file", str(e / "none.jsonl")],
     '--task-file {d}/none.jsonl: no such file, expected a JSONL task file'),
    ("task-file-empty", lambda e: _task_file(e, "\n\n"), '--task-file {d}/t.jsonl: no items, expected one JSON item a line (see README, Tasks)'),
    ("task-file-malformed", lambda e: _task_file(e, GOOD[:52] + '{"prompt": \n'), '--task-file {d}/t.jsonl: line 2: invalid JSON (Expecting value), expected one JSON item a line (see README, Tasks)'),
    ("task-file-latin1", lambda e: _task_file(e, GOOD + '{"prompt": "café", "answer": "x"}\n', "latin-1"),
     '--task-file {d}/t.jsonl: line 31 is not UTF-8 (byte 0xe9), expected a UTF-8 JSONL file'),
    ("split-too-large", lambda e: _task_file(e, GOOD) + ["--n-test", "40"],
     "--n-select 8 + --n-val 4 + --n-test 40 = 52 samples, expected at most the 30 items of task 't'"),
    ("n-select-zero", lambda e: ["--n-select", "0"], '--n-select must be positive, got 0'),
    ("n-val-zero-p", lambda e: ["--n-val", "0", "--variant", "P"], '--n-val must be positive for CorrSteer-P (--variant P), got 0: P keeps the features that beat the baseline on the validation split'),
    ("n-test-zero-p", lambda e: ["--n-val", "0", "--n-test", "0", "--variant", "P"],
     '--n-test must be positive, got 0'),
    ("batch-size-zero", lambda e: ["--batch-size", "0"], '--batch-size must be positive, got 0'),
    ("scale-nan", lambda e: ["--scale", "nan"], '--scale must be a finite number, got nan'),
    ("scale-zero", lambda e: ["--scale", "0"], '--scale must be nonzero, got 0.0 (every steering vector would vanish)'),
    ("pool-unknown", lambda e: ["--pool", "sum"], "--pool must be max or mean, got 'sum'"),
    ("coef-unknown", lambda e: ["--coef", "median"], "--coef must be mean or active, got 'median'"),
    ("layers-without-saes", lambda e: ["--layers", "5-7"],
     '--layers 5-7: no SAE for layers 5, 6, 7, expected layers the SAEs cover: 1, 2'),
    ("out-unwritable", lambda e: ["--out", str(e / "file" / "sub")], '--out {d}/file/sub is not writable (Not a directory), expected a directory you can create and write to'),
    ("sae-hook-not-residual", "hook", "--saes {d}/saes/blocks.1.hook_resid_post/cfg.json: unsupported hook 'blocks.1.hook_mlp_out': only residual-stream hooks blocks.L.hook_resid_pre / blocks.L.hook_resid_post are supported, expected a sae-lens cfg.json naming a residual hook such as blocks.3.hook_resid_post"),
    ("sae-cfg-not-json", "cfgjson", '--saes {d}/saes/blocks.2.hook_resid_post/cfg.json: Expecting property name enclosed in double quotes: line 1 column 2 (char 1), expected a sae-lens cfg.json naming a residual hook such as blocks.3.hook_resid_post'),
]


@pytest.mark.parametrize("case, extra, message", ROWS, ids=[r[0] for r in ROWS])
def test_run_rejects_before_the_model_loads(env, monkeypatch, capsys, case, extra, message):
    monkeypatch.setattr(commands, "load_task", lambda cfg: FakeTask(30)
                        if not (cfg.task_file or cfg.task != "sentiment")
                        else load_task(cfg))
    if extra == "hook":
        cfg = env / "saes" / "blocks.1.hook_resid_post" / "cfg.json"
        cfg.write_text(cfg.read_text().replace("blocks.1.hook_resid_post", "blocks.1.hook_mlp_out"))
        extra = []
    elif extra == "cfgjson":
        (env / "saes" / "blocks.2.hook_resid_post" / "cfg.json").write_text("{not json")
        extra = []
    else:
        extra = extra(env)
    _no_model(monkeypatch)
    _fails(_run(env, *extra), capsys, message, d=env)


def _sae_weights(env, fn):
    path = env / "saes" / "blocks.1.hook_resid_post" / "sae_weights.safetensors"
    fn(path)


@pytest.mark.parametrize("case, damage, message", [
    ("sae-weights-damaged", lambda p: p.write_bytes(p.read_bytes()[:40]), '--saes {d}/saes: the SAE for layer 1 ({d}/saes/blocks.1.hook_resid_post/sae_weights.safetensors) is damaged (Error while deserializing header: invalid header length), expected sae-lens SAEs (cfg.json + sae_weights.safetensors) for model'),
    ("sae-width", "width", '--saes {d}/saes: SAE for layer 1 ({d}/saes/blocks.1.hook_resid_post) reads d_in=32 but model is 64 wide, expected sae-lens SAEs (cfg.json + sae_weights.safetensors) for model'),
], ids=["sae-weights-damaged", "sae-width"])
def test_run_rejects_bad_saes(env, monkeypatch, capsys, case, damage, message):
    monkeypatch.setattr(commands, "load_task", lambda cfg: FakeTask(30))
    if damage == "width":
        from cases import make_sae

        from corrsteer.model.hooks import HookPoint
        sae = make_sae(torch.Generator().manual_seed(0), 32, 40, "relu")
        save_sae_dir(env / "saes" / "blocks.1.hook_resid_post", sae, HookPoint(1, "post"), "model")
    else:
        _sae_weights(env, damage)
    _fails(_run(env), capsys, message, d=env)


@pytest.mark.parametrize("row", ["no-correlation"])
def test_all_right_or_all_wrong_is_an_error_not_an_empty_result(env, monkeypatch, capsys, row):
    class AllWrong(FakeTask):
        def score(self, item, output):
            return "x", 0.0
    monkeypatch.setattr(commands, "load_task", lambda cfg: AllWrong(30))
    _fails(_run(env), capsys, "no SAE feature correlates positively with correctness on the select split (accuracy "
           "0.00 over 8 samples), expected both right and wrong answers: try a larger --n-select or another task", code=1)
    assert (env / "out" / "IN_PROGRESS").exists()        # the directory does not look finished


def _plan(env, tiny_lm, **change):
    from corrsteer.method.rank import Candidate
    from corrsteer.model.steer import SteeringPlan
    plan = SteeringPlan.from_features("p", "tiny-llama", "random", tiny_bank(tiny_lm, layers=(1,)),
                                      [Candidate(layer=1, feature=3, r=0.5, score=0.5, freq=0.5, coef=1.0)])
    doc = plan.to_dict()
    if "width" in change:
        doc["vectors"] = {k: v[:10] for k, v in doc["vectors"].items()}
    if "layer" in change:
        doc["entries"][0]["layer"] = 9
        doc["entries"][0]["hook"] = "blocks.9.hook_resid_post"
        doc["vectors"] = {"blocks.9.hook_resid_post": next(iter(doc["vectors"].values()))}
    path = env / "plan.json"
    path.write_text(json.dumps(doc) if "text" not in change else change["text"])
    return str(path)


PLAN_ROWS = [(f"plan-{what}-{cmd}", cmd, change, message, early) for what, change, message, early in [
    ("not-json", dict(text="{not json"), '--plan {d}/plan.json is not a steering plan (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)), expected a plan.json written by corrsteer run or select', True),
    ("not-a-plan", dict(text='{"name": "x"}'), "--plan {d}/plan.json is not a steering plan (not a steering plan: no field 'model'), expected a plan.json written by corrsteer run or select", True),
    ("width", dict(width=True), "--plan {d}/plan.json: the vector at blocks.1.hook_resid_post is 10 wide, expected model's width 64", False),
    ("layer", dict(layer=True), '--plan {d}/plan.json steers layer 9, expected a layer of model (0..3)', False),
] for cmd in ("eval", "generate")]


@pytest.mark.parametrize("case, cmd, change, message, early", PLAN_ROWS, ids=[r[0] for r in PLAN_ROWS])
def test_eval_and_generate_reject_bad_plans(env, tiny_lm, monkeypatch, capsys, case, cmd, change, message, early):
    monkeypatch.setattr(commands, "load_task", lambda cfg: FakeTask(30))
    plan = _plan(env, tiny_lm, **change)
    if early:
        _no_model(monkeypatch)
    argv = ["--plan", plan, "--model", str(env / "model")]
    if cmd == "eval":
        argv = ["eval", *argv, "--n-select", "8", "--n-val", "4", "--n-test", "4", "--out", str(env / "ev")]
    else:
        argv = ["generate", *argv, "hi"]
    _fails(argv, capsys, message, d=env)


@pytest.mark.parametrize("row", ["eval-split-overlap"])
def test_eval_refuses_a_test_split_overlapping_the_plans_select_and_val(env, tiny_lm, monkeypatch, capsys, row):
    from corrsteer.model.steer import SteeringPlan
    from corrsteer.tasks.splits import split_record
    task = FakeTask(30)
    monkeypatch.setattr(commands, "load_task", lambda cfg: task)
    path = _plan(env, tiny_lm)
    plan = SteeringPlan.load(path)
    plan.split = split_record(task.name, task.split(8, 4, 4), (8, 4, 4), 0)
    plan.save(path)
    _no_model(monkeypatch)
    _fails(["eval", "--plan", path, "--model", str(env / "model"), "--n-select", "4", "--n-val", "4", "--n-test", "8",
            "--out", str(env / "ev")], capsys,
           "--plan: 4 of the 8 test items (first fake-8) are, or share a group with, the plan's select/val items (the "
           "run used --n-select 8 --n-val 4 --n-test 4 --seed 0), expected a test split disjoint from them: pass the "
           "run's sizes and seed")


@pytest.mark.parametrize("row", ["generate-max-new-negative"])
def test_generate_rejects_negative_max_new_tokens(capsys, row):
    _fails(["generate", "--plan", "p.json", "--max-new-tokens", "-5", "hi"], capsys,
           "--max-new-tokens must be positive, got -5")
