"""The pipeline on a tiny random model with random SAEs: generation, steering, batched validation, statistics,
selection — fast, and asserting real properties."""
from dataclasses import dataclass

import pytest
import torch

from cases import make_sae
from corrsteer.collect import collect
from corrsteer.generate import generate_batch
from corrsteer.hooks import HookPoint, capture, hooked
from corrsteer.saes import BankEntry, SAEBank
from corrsteer.select import layer_candidates, mean_difference, variant_a, variant_p, variant_s
from corrsteer.steer import SteeringPlan
from corrsteer_kernels import CorrStats, encode_pool_reference


@dataclass
class FakeItem:
    id: str
    prompt: str
    gold: str = "even"


class FakeTask:
    """Correct when the answer has an even number of characters: arbitrary, but deterministic."""
    name, kind, max_new_tokens = "fake", "label", 6

    def __init__(self, n=12):
        words = ["apple", "river", "stone", "cloud", "green", "fast", "blue", "quiet", "loud", "night", "tree", "sun"]
        self.items = [FakeItem(f"fake-{i}", f"Say something about the {words[i % 12]} number {i}.") for i in range(n)]

    def score(self, item, output):
        pred = "even" if len(output) % 2 == 0 else "odd"
        return pred, float(pred == item.gold)

    def split(self, n_select, n_val, n_test, seed=0):
        a, b = n_select, n_select + n_val
        return self.items[:a], self.items[a:b], self.items[b:b + n_test]


def tiny_bank(lm, layers=(1, 3), d_sae=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    entries = {}
    for L in layers:
        sae = make_sae(g, lm.d_model, d_sae, "relu")
        sae.W_enc.mul_(3.0)                                    # make features fire on the tiny model's residuals
        entries[L] = BankEntry(sae, HookPoint(L, "post"), f"random-{L}")
    return SAEBank(entries, lm.name)


def test_generate_matches_hf_generate_with_left_padding(tiny_lm):
    prompts = ["Hi", "Tell me a long story about a cat and a dog please.", "What is two plus two?"]
    out = generate_batch(tiny_lm, prompts, 7)
    tok = tiny_lm.tokenizer
    enc = tok([tiny_lm.format(p) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
    ref = tiny_lm.model.generate(**enc, max_new_tokens=7, do_sample=False)
    texts = tok.batch_decode(ref[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert out.texts == texts
    assert (out.lengths >= 1).all() and (out.lengths <= 7).all()


def test_capture_holds_the_generation_positions(tiny_lm):
    hp = HookPoint(2, "post")
    out = generate_batch(tiny_lm, ["One", "Two three four"], 5, capture=[hp])
    h = out.captured[hp]
    assert h.shape[0] == 2 and h.shape[2] == tiny_lm.d_model
    # the first generation position is the last prompt token: recompute it with a plain forward
    tok = tiny_lm.tokenizer
    enc = tok([tiny_lm.format("One"), tiny_lm.format("Two three four")], return_tensors="pt", padding=True,
              add_special_tokens=False)
    pos = (enc["attention_mask"].cumsum(1) - 1).clamp(min=0)
    with torch.no_grad(), capture(tiny_lm.layers, [hp]) as got:
        tiny_lm.model(**enc, position_ids=pos)
    torch.testing.assert_close(h[:, 0], got[hp][0][:, -1], rtol=1e-4, atol=1e-4)


def test_batched_candidates_equal_one_at_a_time(tiny_lm):
    g = torch.Generator().manual_seed(1)
    plans = [{}, {HookPoint(1, "post"): 4 * torch.randn(tiny_lm.d_model, generator=g)},
             {HookPoint(3, "pre"): 4 * torch.randn(tiny_lm.d_model, generator=g)},
             {HookPoint(0, "post"): torch.randn(tiny_lm.d_model, generator=g),
              HookPoint(2, "post"): torch.randn(tiny_lm.d_model, generator=g)}]
    prompts = ["Alpha beta", "Gamma delta epsilon zeta", "Eta"]
    together = generate_batch(tiny_lm, prompts, 6, plans=plans)
    for c, plan in enumerate(plans):
        alone = generate_batch(tiny_lm, prompts, 6, plans=[plan])
        assert together.texts[c::len(plans)] == alone.texts, c
    assert together.texts[0::4] != together.texts[1::4]        # steering did change something


@pytest.mark.parametrize("all_positions", [False, True])
def test_plan_adds_exactly_its_vector_at_exactly_the_chosen_positions(tiny_lm, tmp_path, all_positions):
    bank = tiny_bank(tiny_lm)
    plan = SteeringPlan.from_features("t", tiny_lm.name, "random", bank,
                                      [dict(layer=3, feature=5, coef=2.5, r=0.4), dict(layer=3, feature=9, coef=-1.0)],
                                      all_positions=all_positions)
    path = plan.save(tmp_path / "plan.json")
    back = SteeringPlan.load(path)
    assert back == plan                                        # round trip
    v = 2.5 * bank[3].sae.W_dec[5] - 1.0 * bank[3].sae.W_dec[9]
    torch.testing.assert_close(back.hook_vectors()[HookPoint(3, "post")], v)
    ids = torch.randint(0, 500, (2, 6))
    hp = HookPoint(3, "post")
    with torch.no_grad():
        with capture(tiny_lm.layers, [hp]) as plain:
            tiny_lm.model(ids)
        with back.apply(tiny_lm), capture(tiny_lm.layers, [hp]) as steered:
            tiny_lm.model(ids)
    diff = steered[hp][0] - plain[hp][0]
    expect = torch.zeros_like(diff)
    if all_positions:
        expect[:] = v
    else:
        expect[:, -1] = v                                      # a prefill: only the last prompt token
    torch.testing.assert_close(diff, expect, rtol=1e-5, atol=1e-5)


def test_collect_stats_equal_float64_recomputation(tiny_lm, tmp_path):
    bank = tiny_bank(tiny_lm)
    task = FakeTask(10)
    col = collect(tiny_lm, bank, task, task.items, batch_size=4, checkpoint=tmp_path / "ck.safetensors",
                  progress=False)
    ys = torch.tensor([r["correct"] for r in col.rows])
    assert 0 < ys.sum() < len(ys), "the fake task should have both outcomes"
    out = generate_batch(tiny_lm, [it.prompt for it in task.items], task.max_new_tokens,
                         capture=[e.hook for _, e in bank])
    for L, e in bank:
        pooled = encode_pool_reference(out.captured[e.hook], out.lengths, e.sae, "max")
        want = CorrStats(e.sae.d_sae).update(pooled, ys)
        torch.testing.assert_close(col.sae[L].features, want.features, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(col.sae[L].scalars, want.scalars)
    # resume: a rerun with the same settings reads the checkpoint instead of generating again
    again = collect(tiny_lm, bank, task, task.items, batch_size=4, checkpoint=tmp_path / "ck.safetensors",
                    progress=False)
    assert again.rows == col.rows and torch.equal(again.sae[1].features, col.sae[1].features)


def test_planted_feature_is_selected():
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(200, generator=g) > 0.5).float()
    stats = {}
    for L in range(4):
        z = torch.rand(200, 50, generator=g)
        if L == 2:
            z[:, 17] = 2.0 * y + 0.3 * torch.rand(200, generator=g)   # the planted feature decides correctness
        stats[L] = CorrStats(50).update(z, y)
    cands = layer_candidates(stats)
    s = variant_s(cands)
    assert s[0]["layer"] == 2 and s[0]["feature"] == 17 and s[0]["r"] > 0.9
    assert s[0]["coef"] == pytest.approx(float(stats[2].mean_given_positive()[17]))
    assert [p["layer"] for p in variant_a(cands)] == [0, 1, 2, 3]
    kept = variant_p(cands, {0: 0.5, 1: 0.7, 2: 0.8, 3: 0.6}, base_acc=0.6)
    assert [p["layer"] for p in kept] == [1, 2]


def test_mean_difference_is_the_difference_of_class_means():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(30, 8, generator=g)
    y = torch.tensor([1.0, 0.0] * 15)
    md = mean_difference({0: CorrStats(8).update(z, y)}, 0)
    torch.testing.assert_close(md, (z[y > 0].mean(0) - z[y == 0].mean(0)).float(), rtol=1e-5, atol=1e-6)


def test_run_end_to_end_writes_every_output(tiny_lm, tmp_path):
    import json

    from corrsteer.run import RunConfig, corrsteer_run
    bank = tiny_bank(tiny_lm, layers=(0, 2, 3))
    task = FakeTask(24)
    res = corrsteer_run(tiny_lm, bank, task, tmp_path, RunConfig(n_select=12, n_val=4, n_test=8, batch_size=4),
                        sae_source="random")
    for name in ("plan.json", "stats.safetensors", "predictions.jsonl", "report.md", "r_per_layer.png",
                 "top_features.png", "plans/S.json", "plans/A.json"):
        assert (tmp_path / name).exists(), name
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    variants = {r["variant"] for r in rows}
    assert variants == {"baseline", "CorrSteer-S", "CorrSteer-A", "CorrSteer-P", "raw-residual", "mean-difference"}
    assert all(sum(r["variant"] == v for r in rows) == 8 for v in variants)
    assert set(rows[0]) >= {"variant", "id", "prompt", "output", "pred", "gold", "correct"}
    assert "CorrSteer-S" in (tmp_path / "report.md").read_text()
    assert SteeringPlan.load(tmp_path / "plans" / "S.json").entries[0].layer in (0, 2, 3)
    assert [c.variant for c in res["comparisons"]] == ["CorrSteer-S", "CorrSteer-A", "CorrSteer-P"]


def test_p_prefixes_rank_by_validation_accuracy():
    from corrsteer.select import p_prefixes
    kept = [dict(layer=1, val_acc=0.6), dict(layer=4, val_acc=0.8), dict(layer=9, val_acc=0.7)]
    pre = p_prefixes(kept)
    assert [[p["layer"] for p in x] for x in pre] == [[4], [4, 9], [4, 9, 1]]


def test_cli_select_eval_generate(tiny_lm, tmp_path, monkeypatch, capsys):
    from corrsteer import cli
    from corrsteer.saes import save_sae_dir
    tiny_lm.model.save_pretrained(tmp_path / "model")
    tiny_lm.tokenizer.save_pretrained(tmp_path / "model")
    for L, e in tiny_bank(tiny_lm, layers=(1, 2)):
        save_sae_dir(tmp_path / "saes" / e.hook.hook_name, e.sae, e.hook, "model")
    monkeypatch.setattr(cli, "_task", lambda args: FakeTask(30))
    common = ["--model", str(tmp_path / "model"), "--n-select", "12", "--n-val", "4", "--n-test", "6",
              "--batch-size", "4"]
    assert cli.main(["select", *common, "--saes", str(tmp_path / "saes"), "--variant", "S",
                     "--out", str(tmp_path / "run")]) == 0
    assert "CorrSteer-S: L" in capsys.readouterr().out
    plan = tmp_path / "run" / "plans" / "S.json"
    assert cli.main(["eval", *common, "--plan", str(plan), "--out", str(tmp_path / "eval")]) == 0
    assert "vs baseline" in capsys.readouterr().out
    assert cli.main(["generate", "--plan", str(plan), "--model", str(tmp_path / "model"), "--max-new-tokens", "4",
                     "Hello there"]) == 0
    assert "--- steered" in capsys.readouterr().out
