"""The controls go through P's procedure: R random-feature draws at P's layers, the shuffled-outcome control ranked,
validated, filtered and prefix-searched like P; --p-filter random keeps a layer only where its feature beats
random features at that layer on validation."""
import json

import torch
from fakes import FakeTask, tiny_bank

from corrsteer.method.rank import Candidate
from corrsteer.method.variants import random_feature_picks, variant_p
from corrsteer.model.steer import SteeringPlan
from corrsteer.pipeline.prefix import kept_layers, prefix_stage
from corrsteer.pipeline.report import control_names
from corrsteer.pipeline.run import RunConfig, corrsteer_run
from corrsteer.pipeline.runner import Context
from corrsteer.pipeline.validate import Validation, draw_seed, random_stage


def _cand(L, f=0, coef=1.0):
    return Candidate(layer=L, feature=f, r=0.5, score=0.5, freq=0.5, coef=coef)


def test_random_filter_drops_a_layer_that_random_features_match():
    cands = {1: [_cand(1)], 2: [_cand(2)], 3: [_cand(3)]}
    val = {1: 0.70, 2: 0.60, 3: 0.40}                     # layer 3 does not beat the baseline (0.5)
    assert [c.layer for c in variant_p(cands, val, 0.5)] == [1, 2]
    random = {1: 0.55, 2: 0.60}                            # random features at layer 2 do as well as its feature
    kept = variant_p(cands, val, 0.5, random)
    assert [c.layer for c in kept] == [1] and kept[0].val_acc == 0.70
    assert variant_p(cands, val, 0.5, {}) == []            # a layer without random draws is not kept


def test_random_draws_are_distinct_norm_matched_and_fixed_by_seed(tiny_lm):
    bank = tiny_bank(tiny_lm, layers=(1, 3), d_sae=40)
    plan = SteeringPlan.from_features("P", tiny_lm.name, "random", bank, [_cand(1, 5, 2.0), _cand(3, 7, 0.5)])
    draws = [random_feature_picks(plan, bank, draw_seed(0, d)) for d in range(5)]
    assert draws[0] == random_feature_picks(plan, bank, 0)          # draw 1 is the single control of older runs
    assert len({tuple(p.feature for p in d) for d in draws}) > 1
    for d in draws:
        assert [p.layer for p in d] == [1, 3] and 5 != d[0].feature and 7 != d[1].feature
        drawn = SteeringPlan.from_features("R", tiny_lm.name, "random", bank, d)
        for h, v in plan.vectors.items():
            torch.testing.assert_close(torch.tensor(drawn.vectors[h]).norm(), torch.tensor(v).norm(), rtol=1e-5,
                                       atol=0)
    assert draw_seed(0, 1) != draw_seed(0, 0, stage=1) != draw_seed(1, 0)


def test_control_names_order_draws_and_read_old_runs():
    rows = {"baseline": [], "control-shuffled-outcome": [], "control-random-feature-10": [],
            "control-random-feature-2": [], "CorrSteer-P": []}
    assert control_names(rows) == ["control-random-feature-2", "control-random-feature-10", "control-shuffled-outcome"]
    assert control_names({"control-random-feature": [], "baseline": []}) == ["control-random-feature"]


def _run(tiny_lm, tmp_path, **kw):
    task = FakeTask(24)
    for i, it in enumerate(task.items):
        it.gold = "even" if i % 2 == 0 else "odd"
    cfg = RunConfig(n_select=12, n_val=6, n_test=4, batch_size=6, few_shot=0, variant="P", **kw)
    res = corrsteer_run(tiny_lm, tiny_bank(tiny_lm, layers=(0, 2, 3)), task, tmp_path, cfg, sae_source="random")
    return res, json.loads((tmp_path / "validation.json").read_text())


def test_shuffled_control_goes_through_validation_filter_and_prefix_search(tiny_lm, tmp_path, monkeypatch):
    seen = {}
    real = prefix_stage

    def spy(ctx, cands, val_items, val, shuffled=None):
        seen["shuffled"] = shuffled
        out = real(ctx, cands, val_items, val, shuffled)
        seen["out"] = out
        return out
    monkeypatch.setattr("corrsteer.pipeline.run.prefix_stage", spy)
    res, val = _run(tiny_lm, tmp_path, p_filter="random", val_draws=2, random_draws=3)
    assert set(val) >= {"baseline", "per_layer", "random_per_layer", "shuffled_per_layer",
                        "shuffled_random_per_layer", "shuffled_layers", "shuffled_prefix_accuracy"}
    assert sorted(int(L) for L in val["shuffled_per_layer"]) == sorted(seen["shuffled"])    # every shuffled layer
    beat = {int(L) for L, s in val["shuffled_per_layer"].items() if s > val["baseline"]}
    assert {int(L) for L in val["shuffled_random_per_layer"]} == beat                   # random draws where it beat
    assert val["shuffled_layers"] == [p.layer for p in seen["out"][1].picks]
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    names = {r["variant"] for r in rows}
    assert {f"control-random-feature-{i}" for i in (1, 2, 3)} <= names and "control-random-feature-4" not in names
    assert res.settings["P_filter"] == "random"


def test_baseline_filter_draws_nothing_on_validation(tiny_lm, tmp_path):
    _, val = _run(tiny_lm, tmp_path, p_filter="baseline")
    assert val["random_per_layer"] == {} and val["shuffled_random_per_layer"] == {}
    assert not (tmp_path / "checkpoints" / "validate-random.safetensors").exists()


def test_random_stage_draws_at_every_layer_that_beat_the_baseline_for_p_and_the_shuffled_control(tiny_lm, tmp_path,
                                                                                                  monkeypatch):
    bank = tiny_bank(tiny_lm, layers=(0, 2, 3))
    ctx = Context(tiny_lm, bank, FakeTask(4), RunConfig(val_draws=2, p_filter="random"), tmp_path, "random")
    cands = {L: [_cand(L, 1)] for L in (0, 2, 3)}
    shuffled = {L: [_cand(L, 4)] for L in (0, 3)}
    v = Validation(baseline=0.5, per_layer={0: 0.6, 2: 0.4, 3: 0.7}, shuffled={0: 0.9, 3: 0.5})
    score = {"RL0.0": 0.5, "RL0.1": 0.7, "RL3.0": 0.8, "RL3.1": 0.8, "RS0.0": 0.2, "RS0.1": 0.4}

    def fake_gen(ctx, items, plans, stage, task=None):
        assert stage == "validate-random" and sorted(plans) == sorted(score)
        return {n: [{"correct": score[n]}] for n in plans}
    monkeypatch.setattr(Context, "generate", fake_gen)
    monkeypatch.setattr(Context, "measure", lambda self, rows: rows[0]["correct"])
    random_stage(ctx, cands, shuffled, [], v)
    assert v.random == {0: 0.6, 3: 0.8} and v.shuffled_random == {0: 0.30000000000000004}
    kept = kept_layers(ctx, cands, v.per_layer, v.random, v.baseline)
    assert kept == []                                     # 0.6 does not beat 0.6; 0.7 does not beat 0.8
    assert [c.layer for c in kept_layers(ctx, shuffled, v.shuffled, v.shuffled_random, v.baseline)] == [0]
