"""The one validation of plan JSON (corrsteer.model.plan_check): a plan as run writes it passes; each way a hand edit
or another tool can break one is refused with its own line, before any command uses the plan."""
import json
import random

import pytest

from corrsteer.model.plan_check import PlanProblem, check_plan_dict
from corrsteer.model.steer import SteeringPlan


def good(width=None) -> dict:
    """A plan dict as run writes it, with a fresh random width and values."""
    rng = random.Random()
    w = width or rng.randint(1, 9)
    vec = [rng.uniform(-2, 2) for _ in range(w)]
    return {"name": "p", "model": "m", "sae_source": "trained", "all_positions": False,
            "entries": [{"layer": 1, "hook": "blocks.1.hook_resid_post", "features": [3, 7],
                         "coefficients": [0.5, -1.0], "r": [0.2, 0.1]},
                        {"layer": 2, "hook": "blocks.2.hook_resid_pre", "features": [], "coefficients": [], "r": []}],
            "vectors": {"blocks.1.hook_resid_post": vec, "blocks.2.hook_resid_pre": [x / 2 for x in vec]}}


def test_a_plan_as_written_passes_and_round_trips(tmp_path):
    d = good()
    check_plan_dict(d)
    plan = SteeringPlan.from_dict(json.loads(json.dumps(d)))
    assert SteeringPlan.load(plan.save(tmp_path / "p.json")) == plan
    no_vectors = dict(good(), entries=[], vectors={})       # CorrSteer-P that kept nothing
    check_plan_dict(no_vectors)


def _vec(d, value, hook="blocks.1.hook_resid_post"):
    d["vectors"][hook] = value


CASES = [
    ("all-positions-string", lambda d: d.update(all_positions="false"),
     "field 'all_positions' is a string ('false'), expected true or false (a JSON boolean)"),
    ("all-positions-number", lambda d: d.update(all_positions=1), "field 'all_positions' is a number (1)"),
    ("name-number", lambda d: d.update(name=3), "field 'name' is a number, expected a string"),
    ("entries-object", lambda d: d.update(entries={}), "'entries' is an object"),
    ("entry-extra-key", lambda d: d["entries"][0].update(scale=2), "entry 0 is not {layer, hook, features"),
    ("entry-layer-bool", lambda d: d["entries"][0].update(layer=True), "entry 0: layer True, expected a layer"),
    ("entry-layer-negative", lambda d: d["entries"][0].update(layer=-1), "entry 0: layer -1"),
    ("entry-hook-other-layer", lambda d: d["entries"][0].update(hook="blocks.5.hook_resid_post"),
     "entry 0: hook 'blocks.5.hook_resid_post' for layer 1, expected blocks.1.hook_resid_post or"),
    ("entry-hook-unknown", lambda d: d["entries"][0].update(hook="blocks.1.attn"), "entry 0: hook 'blocks.1.attn'"),
    ("coef-missing", lambda d: d["entries"][0].update(coefficients=[0.5]), "one finite coefficient"),
    ("coef-nan", lambda d: d["entries"][0].update(coefficients=[0.5, float("nan")]), "one finite coefficient"),
    ("feature-string", lambda d: d["entries"][0].update(features=["3", 7]), "a list of feature numbers"),
    ("two-entries-one-hook", lambda d: d["entries"][1].update(layer=1, hook="blocks.1.hook_resid_post"),
     "two entries steer blocks.1.hook_resid_post"),
    ("entry-without-vector", lambda d: d["vectors"].pop("blocks.2.hook_resid_pre"),
     "entry blocks.2.hook_resid_pre has no vector"),
    ("vector-without-entry", lambda d: _vec(d, [1.0], "blocks.9.hook_resid_post"),
     "the vector at 'blocks.9.hook_resid_post' belongs to no entry"),
    ("vector-2d", lambda d: _vec(d, [[1.0, 2.0]]), "is a list of lists (2-D), expected one flat list"),
    ("vector-strings", lambda d: _vec(d, ["0.5", 1.0]), "is a list holding non-numbers"),
    ("vector-bools", lambda d: _vec(d, [True, 1.0]), "is a list holding non-numbers"),
    ("vector-empty", lambda d: _vec(d, []), "is empty"),
    ("vector-object", lambda d: _vec(d, {"0": 1.0}), "is an object"),
    ("vector-inf", lambda d: _vec(d, [1.0, float("inf")]), "is not finite (NaN or inf)"),
    ("mixed-widths", lambda d: _vec(d, [1.0] * 11, "blocks.2.hook_resid_pre"),
     "blocks.2.hook_resid_pre 11, expected one width for every vector"),
]


@pytest.mark.parametrize("case, change, words", CASES, ids=[c[0] for c in CASES])
def test_each_broken_field_is_named(case, change, words):
    d = good(width=4 if case == "mixed-widths" else None)
    change(d)
    with pytest.raises(PlanProblem) as e:
        check_plan_dict(d)
    assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError):
        SteeringPlan.from_dict(d)


def test_mixed_widths_name_both_vectors():
    d = good(width=4)
    _vec(d, [1.0] * 11, "blocks.2.hook_resid_pre")
    with pytest.raises(PlanProblem, match=r"^the vector at blocks.1.hook_resid_post is 4 wide but the one at "
                                          r"blocks.2.hook_resid_pre 11, expected one width"):
        check_plan_dict(d)


@pytest.mark.parametrize("drop", ["name", "model", "sae_source", "entries"])
def test_a_missing_field_is_not_a_plan(drop):
    d = good()
    d.pop(drop)
    with pytest.raises(ValueError, match=f"not a steering plan: no field '{drop}'"):
        SteeringPlan.from_dict(d)
