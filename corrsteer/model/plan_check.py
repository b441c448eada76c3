"""What a plan.json must hold, checked field by field before any command uses it (eval, generate, export, and the
plan `import` writes): the one validation of plans.

A plan is {"name", "model", "sae_source": strings, "entries": [{"layer": int, "hook": "blocks.L.hook_resid_...",
"features": [int], "coefficients": [finite number], "r": [number]}], "vectors": {hook: [finite number] * width},
"all_positions": true | false}: one entry per hook, one vector per entry's hook and no other, every vector a flat
list of JSON numbers (never strings or booleans) of one width. `plan_problem` names the first thing that is not so.
"""
from __future__ import annotations

import math

from corrsteer.model.hooks import HookPoint

EXPECTED = "expected a plan.json written by corrsteer run, select or import"
_ENTRY_KEYS = {"layer", "hook", "features", "coefficients", "r"}


class PlanProblem(ValueError):
    """A plan that is JSON of the right shape but holds a wrong value: '<what>, expected <what instead>'."""


def _kind(v) -> str:
    return {bool: "a boolean", str: "a string", list: "a list", dict: "an object", type(None): "null"}.get(
        type(v), "a number")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_top(d: dict) -> None:
    for key in ("name", "model", "sae_source"):
        if not isinstance(d[key], str):
            raise PlanProblem(f"field {key!r} is {_kind(d[key])}, expected a string")
    ap = d.get("all_positions", False)
    if not isinstance(ap, bool):
        raise PlanProblem(f"field 'all_positions' is {_kind(ap)} ({ap!r}), expected true or false (a JSON boolean)")
    if not isinstance(d["entries"], list) or not isinstance(d.get("vectors", {}), dict):
        raise PlanProblem(f"'entries' is {_kind(d['entries'])} and 'vectors' {_kind(d.get('vectors', {}))}, "
                          "expected a list of entries and an object of vectors")


def _check_entry(i: int, e) -> str:
    """The entry's hook name, once its fields are checked."""
    if not isinstance(e, dict) or set(e) - _ENTRY_KEYS or not {"layer", "hook", "features", "coefficients"} <= set(e):
        raise PlanProblem(f"entry {i} is not {{layer, hook, features, coefficients, r}}, expected those fields only")
    if not isinstance(e["layer"], int) or isinstance(e["layer"], bool) or e["layer"] < 0:
        raise PlanProblem(f"entry {i}: layer {e['layer']!r}, expected a layer number (0 or more)")
    try:
        hp = HookPoint.parse(e["hook"]) if isinstance(e["hook"], str) else None
    except ValueError:
        hp = None
    if hp is None or hp.layer != e["layer"]:
        raise PlanProblem(f"entry {i}: hook {e['hook']!r} for layer {e['layer']}, expected "
                          f"blocks.{e['layer']}.hook_resid_post or blocks.{e['layer']}.hook_resid_pre")
    feats, coefs, r = e["features"], e["coefficients"], e.get("r", [])
    lists = all(isinstance(x, list) for x in (feats, coefs, r))
    if not lists or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 0 for f in feats) or \
            len(coefs) != len(feats) or not all(_number(c) and math.isfinite(c) for c in coefs + r) or \
            len(r) not in (0, len(feats)):
        raise PlanProblem(f"entry {i} ({e['hook']}): features {feats!r} with coefficients {coefs!r}, expected a list "
                          "of feature numbers and one finite coefficient (and r) per feature")
    return e["hook"]


def _check_vector(hook: str, v) -> int:
    """The vector's width, once it is checked to be a flat list of finite JSON numbers."""
    if not isinstance(v, list) or not v or not all(_number(x) for x in v):
        shape = "a list of lists (2-D)" if isinstance(v, list) and any(isinstance(x, list) for x in v) else \
            ("empty" if v == [] else f"{_kind(v)}" if not isinstance(v, list) else "a list holding non-numbers")
        raise PlanProblem(f"the vector at {hook} is {shape}, expected one flat list of numbers per hook")
    if not all(math.isfinite(x) for x in v):
        raise PlanProblem(f"the vector at {hook} is not finite (NaN or inf), expected finite vectors as corrsteer "
                          "run or select writes them")
    return len(v)


def check_plan_dict(d: dict) -> None:
    """Raise PlanProblem (one line) for the first field of a plan's JSON that is not what a plan holds; KeyError for
    a missing required field."""
    _check_top(d)
    hooks = [_check_entry(i, e) for i, e in enumerate(d["entries"])]
    dup = sorted({h for h in hooks if hooks.count(h) > 1})
    if dup:
        raise PlanProblem(f"two entries steer {dup[0]}, expected one entry per hook (its features listed together)")
    vectors = d.get("vectors", {})
    for hook in hooks:
        if hook not in vectors:
            raise PlanProblem(f"entry {hook} has no vector, {EXPECTED}")
    widths = {}
    for hook, v in vectors.items():
        if hook not in hooks:
            raise PlanProblem(f"the vector at {hook!r} belongs to no entry, expected one vector per entry's hook")
        widths[hook] = _check_vector(hook, v)
    if len(set(widths.values())) > 1:
        (h1, w1), (h2, w2) = sorted(widths.items(), key=lambda kv: kv[1])[::len(widths) - 1]
        raise PlanProblem(f"the vector at {h1} is {w1} wide but the one at {h2} {w2}, expected one width for every "
                          "vector (the model's)")
