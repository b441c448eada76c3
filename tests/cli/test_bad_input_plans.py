"""Bad plans and vector files for export, import, eval and generate (issues 39, 40): each refused in one line before
the model loads, by the one validation of plans (corrsteer.model.plan_check) or the importers' checks. Each row id
is a row of the bad-input table in docs/bad-input.md (tests/cli/test_bad_input_table.py)."""
import json

import numpy as np
import pytest
from fakes import save_tiny_dirs, tiny_bank
from test_bad_input_more import run_line

from corrsteer.cli import commands
from corrsteer.cli import main as cli
from corrsteer.export import gguf
from corrsteer.export import lm_eval as lm_eval_mod
from corrsteer.method.rank import Candidate
from corrsteer.model import lm as lm_mod
from corrsteer.model.steer import SteeringPlan


@pytest.fixture
def env(tiny_lm, tmp_path, monkeypatch):
    save_tiny_dirs(tiny_lm, tmp_path)
    monkeypatch.setenv("CORRSTEER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lm_mod, "hub_reachable", lambda timeout=3.0: False)

    def fail(*a, **kw):
        raise AssertionError("the model was loaded before the input was checked")
    monkeypatch.setattr(commands, "load_lm", fail)
    return tmp_path


def plan_file(d, tiny_lm, change=None, all_positions=True) -> str:
    """A plan of feature 3 at layer 1 of a random bank (as run writes it), changed by `change(doc)`."""
    plan = SteeringPlan.from_features("p", "tiny-llama", "random", tiny_bank(tiny_lm, layers=(1,)),
                                      [Candidate(layer=1, feature=3, r=0.5, score=0.5, freq=0.5, coef=1.0)],
                                      all_positions=all_positions)
    doc = plan.to_dict()
    if change:
        change(doc)
    (d / "plan.json").write_text(json.dumps(doc))
    return str(d / "plan.json")


def _second_vector(doc, hook, width, entry=True):
    if entry:
        doc["entries"].append({"layer": int(hook.split(".")[1]), "hook": hook, "features": [], "coefficients": []})
    doc["vectors"][hook] = [0.5] * width


def cv(d, width=64, layer=1, hint="tiny-llama") -> str:
    return str(gguf.write_directions(d / "cv.gguf", {layer: np.ones(width, np.float32)}, hint))


def EXPORT(d, m, fmt="gguf-control-vector", out="x.gguf", **kw):
    return ["export", plan_file(d, m, **kw), "--format", fmt, "--out", str(d / out)]


def IMPORT(path, d, *extra):
    return ["import", path, "--out", str(d / "imported.json"), *extra]


def _spec_positions(d, m):
    out = d / "s.json"
    assert cli.main(EXPORT(d, m, "vllm", "s.json")) == 0
    spec = json.loads(out.read_text())
    spec["vectors"][0]["apply"] = {"prompt_window": [-4, None], "generation": "all"}
    out.write_text(json.dumps(spec))
    return IMPORT(str(out), d, "--model", "m")


EXPECTED_MODEL = "expected --model default, gemma3-270m, a .gguf file, a HF model directory or a hub id"
ROWS = [
    ("plan-all-positions-string", "`\"all_positions\": \"false\"` (a string) in a plan (`export`)",
     lambda d, m: EXPORT(d, m, change=lambda doc: doc.update(all_positions="false")),
     "--plan {d}/plan.json: field 'all_positions' is a string ('false'), expected true or false (a JSON boolean)"),
    ("plan-mixed-widths", "a plan whose vectors have two widths (`export`)",
     lambda d, m: EXPORT(d, m, change=lambda doc: _second_vector(doc, "blocks.2.hook_resid_post", 10)),
     "--plan {d}/plan.json: the vector at blocks.2.hook_resid_post is 10 wide but the one at "
     "blocks.1.hook_resid_post 64, expected one width for every vector (the model's)"),
    ("plan-2d-vector", "a 2-D vector in a plan (`export`)",
     lambda d, m: EXPORT(d, m, change=lambda doc: doc["vectors"].update({"blocks.1.hook_resid_post": [[1.0] * 64]})),
     "--plan {d}/plan.json: the vector at blocks.1.hook_resid_post is a list of lists (2-D), expected one flat "
     "list of numbers per hook"),
    ("plan-vector-strings", "a vector of strings in a plan (`generate`)",
     lambda d, m: ["generate", "--plan", plan_file(d, m, lambda doc: doc["vectors"].update(
         {"blocks.1.hook_resid_post": ["0.5"] * 64})), "hi"],
     "--plan {d}/plan.json: the vector at blocks.1.hook_resid_post is a list holding non-numbers, expected one "
     "flat list of numbers per hook"),
    ("plan-extra-vector", "a vector at a layer no entry steers (`generate`)",
     lambda d, m: ["generate", "--plan", plan_file(d, m, lambda doc: _second_vector(
         doc, "blocks.9.hook_resid_post", 64, entry=False)), "hi"],
     "--plan {d}/plan.json: the vector at 'blocks.9.hook_resid_post' belongs to no entry, expected one vector per "
     "entry's hook"),
    ("plan-entry-no-vector", "an entry without its vector (`eval`)",
     lambda d, m: ["eval", "--plan", plan_file(d, m, lambda doc: doc.update(vectors={}))],
     "--plan {d}/plan.json: entry blocks.1.hook_resid_post has no vector, expected a plan.json written by "
     "corrsteer run, select or import"),
    ("export-neuronpedia-positions", "`export --format neuronpedia` of a plan of the generated tokens only",
     lambda d, m: EXPORT(d, m, "neuronpedia", "np.json", all_positions=False),
     "--format neuronpedia steers every prompt position but plan 'p' steers only the last prompt token and the "
     "generated ones, expected a plan made with --all-positions (or pass --allow-prompt-positions to accept the "
     "difference)"),
    ("import-scale-zero", "`import --scale 0`", lambda d, m: IMPORT(cv(d), d, "--scale", "0"),
     "--scale must be nonzero, got 0.0 (every steering vector would vanish)"),
    ("import-scale-nan", "`import --scale nan`", lambda d, m: IMPORT(cv(d), d, "--scale", "nan"),
     "--scale must be a finite number, got nan"),
    ("import-model-type-hint", "`import` of a control vector whose hint is a model type (repeng: `llama`)",
     lambda d, m: IMPORT(cv(d, hint="llama"), d),
     "--model is required: {d}/cv.gguf names only the model type 'llama', " + EXPECTED_MODEL),
    ("import-width-model", "`import --model DIR` of vectors of another width",
     lambda d, m: IMPORT(cv(d, width=10), d, "--model", str(d / "model")),
     "{d}/cv.gguf: the vector of layer 1 is 10 wide, expected {d}/model's width 64"),
    ("import-layer-model", "`import --model DIR` of a vector at a layer the model lacks",
     lambda d, m: IMPORT(cv(d, layer=9), d, "--model", str(d / "model")),
     "{d}/cv.gguf steers layer 9, expected a layer of {d}/model (0..3)"),
    ("import-vllm-positions", "`import` of a SteeringSpec whose positions a plan cannot hold", _spec_positions,
     '{d}/s.json: apply {"prompt_window": [-4, null], "generation": "all"} selects positions a plan cannot hold, '
     'expected {"prompt": "all", "generation": "all"} or {"prompt_positions": [-1], "generation": "all"}'),
]


@pytest.mark.parametrize("case, what, argv, message", ROWS, ids=[r[0] for r in ROWS])
def test_bad_plan_or_vectors_row(env, tiny_lm, capsys, case, what, argv, message):
    code, line = run_line(argv(env, tiny_lm), capsys)
    assert (code, line) == (2, "corrsteer: error: " + message.replace("{d}", str(env)))
    assert not (env / "imported.json").exists() and not (env / "x.gguf").exists()


@pytest.mark.parametrize("case, message", [(
    "export-lm-eval-affected",
    "--format lm-eval: lm-eval 0.4.9.1 installed here adds the last layer's vector at every hookpoint (fixed in "
    "0.4.9.2) and the plan steers 2 layers, expected lm-eval >= 0.4.9.2 (pip install -U 'lm-eval>=0.4.9.2')")],
    ids=["export-lm-eval-affected"])
def test_an_affected_lm_eval_refuses_a_multi_layer_plan(env, tiny_lm, monkeypatch, capsys, case, message):
    monkeypatch.setattr(lm_eval_mod, "installed_version", lambda: "0.4.9.1")
    argv = EXPORT(env, tiny_lm, "lm-eval", "x.pt",
                  change=lambda doc: _second_vector(doc, "blocks.2.hook_resid_post", 64))
    assert run_line(argv, capsys) == (2, "corrsteer: error: " + message)
