"""The no-SAE baselines choose their own layer (mean-difference also its scale) on the validation split, and their
plans do not depend on the SAE bank: two banks of other weights give byte-identical baseline plans."""
import json

import torch
from fakes import FakeTask, tiny_bank

from corrsteer.pipeline import baselines as B
from corrsteer.pipeline import runner
from corrsteer.pipeline.collect import Collected
from corrsteer.pipeline.run import RunConfig, corrsteer_run
from corrsteer.pipeline.runner import Context
from corrsteer_kernels import CorrStats


def _run(tiny_lm, tmp_path, seed):
    bank = tiny_bank(tiny_lm, layers=(0, 1, 2, 3), seed=seed)
    cfg = RunConfig(n_select=12, n_val=6, n_test=4, batch_size=4, variant="P", few_shot=0)
    out = tmp_path / f"bank{seed}"
    res = corrsteer_run(tiny_lm, bank, FakeTask(24), out, cfg, sae_source="random")
    return out, res.settings


def test_baseline_plans_do_not_depend_on_the_sae_bank(tiny_lm, tmp_path):
    a, sa = _run(tiny_lm, tmp_path, 0)
    b, sb = _run(tiny_lm, tmp_path, 7)
    assert (a / "stats.safetensors").read_bytes() != (b / "stats.safetensors").read_bytes()   # the banks differ
    for name in ("mean-difference", "raw-residual"):
        pa, pb = (a / "plans" / f"{name}.json").read_bytes(), (b / "plans" / f"{name}.json").read_bytes()
        assert pa == pb, name
        plan = json.loads(pa)
        assert plan["sae_source"] == B.NO_SAE and plan["entries"][0]["features"] == []
    ca, cb = (json.loads((d / "config.json").read_text())["baselines"] for d in (a, b))
    assert ca == cb
    for name in ("mean-difference", "raw-residual"):             # each chose on validation, over every layer
        assert set(ca[name]["validation"]) >= {"L0", "L1", "L2", "L3"}
    assert set(ca["mean-difference"]["validation"]) >= {"x1", "x0.5", "x2", "x4"}
    assert sa["mean_difference_layer"] == ca["mean-difference"]["layer"] == sb["mean_difference_layer"]
    assert sa["raw_residual"] == sb["raw_residual"] and "validation" in sa["raw_residual"]
    rows = [json.loads(line) for line in (a / "predictions.jsonl").read_text().splitlines()]
    assert {r["variant"] for r in rows} >= {"mean-difference", "raw-residual"}


def _stats(layers, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for L in layers:
        st = CorrStats(d)
        st.update(torch.randn(10, d, generator=g, dtype=torch.float64), torch.tensor([1., 0.] * 5, dtype=torch.float64))
        out[L] = st
    return out


class _Hook:
    def __init__(self, L):
        self.hook = f"hook{L}"


def _ctx(tmp_path, layers, scale=1.0):
    cfg = RunConfig(n_select=10, n_val=4, n_test=4, scale=scale)
    lm = type("LM", (), {"device": "cpu", "name": "m"})()
    return Context(lm, {L: _Hook(L) for L in layers}, FakeTask(4), cfg, tmp_path)


def test_each_baseline_takes_its_best_validated_layer_and_scale(tmp_path, monkeypatch):
    """Planted validation scores: raw-residual is best at layer 5, mean-difference at layer 2, then at x2; ties go
    to the lower layer and to x1."""
    layers = (2, 5, 7)
    col = Collected(sae={}, raw=_stats(layers), rows=[])
    wanted = {"raw L5": 0.9, "raw L7": 0.9, "md L2": 0.8, "md L7": 0.8, "x2": 0.85, "x4": 0.85}
    seen = []

    def fake_run_plans(lm, task, items, plans, *a, **kw):
        seen.append(list(plans))
        return {n: [{"correct": float(k < 100 * wanted.get(n, 0.1)), "gold": "even", "pred": "even"}
                    for k in range(100)] for n in plans}

    monkeypatch.setattr(runner, "run_plans", fake_run_plans)
    ch = B.baseline_stage(_ctx(tmp_path, layers), col, ["v"] * 4)
    assert (ch.chosen[B.RAW].layer, ch.chosen[B.MD].layer, ch.chosen[B.MD].scale) == (5, 2, 2.0)
    assert seen == [[f"raw L{L}" for L in layers] + [f"md L{L}" for L in layers], ["x0.5", "x2", "x4"]]
    assert ch.chosen[B.RAW].dim == int(col.raw[5].pearson().argmax())
    vec = ch.vectors(col, 1.0)
    assert torch.allclose(vec[B.MD][1], 2.0 * B.mean_difference(col.raw, 2, 1.0))
    wanted.update({"x2": 0.8, "x4": 0.8})                       # a tie with x1 keeps x1
    assert B.baseline_stage(_ctx(tmp_path, layers), col, ["v"] * 4).chosen[B.MD].scale == 1.0


def test_without_validation_items_the_select_correlation_chooses(tmp_path):
    layers = (1, 4)
    col = Collected(sae={}, raw=_stats(layers, seed=3), rows=[])
    ch = B.baseline_stage(_ctx(tmp_path, layers), col, [])
    best = max(layers, key=lambda L: float(col.raw[L].pearson().max()))
    assert ch.chosen[B.RAW].layer == ch.chosen[B.MD].layer == best and "no validation" in ch.how
