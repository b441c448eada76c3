"""`corrsteer run` as a function on the tiny random model: every output, and the config.json it records."""
import json

from fakes import FakeTask, tiny_bank

from corrsteer.model.steer import SteeringPlan
from corrsteer.pipeline.run import RunConfig, corrsteer_run

RANDOM = [f"control-random-feature-{i}" for i in range(1, 6)]


def test_run_end_to_end_writes_every_output(tiny_lm, tmp_path):
    bank = tiny_bank(tiny_lm, layers=(0, 2, 3))
    task = FakeTask(24)
    cfg = RunConfig(n_select=12, n_val=4, n_test=8, batch_size=4)
    res = corrsteer_run(tiny_lm, bank, task, tmp_path, cfg, sae_source="random")
    for name in ("config.json", "plan.json", "stats.safetensors", "predictions.jsonl", "report.md", "r_per_layer.png",
                 "top_features.png", "plans/S.json", "plans/A.json"):
        assert (tmp_path / name).exists(), name
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    variants = {r["variant"] for r in rows}
    assert variants == {"baseline", "CorrSteer-S", "CorrSteer-A", "CorrSteer-P", "raw-residual", "mean-difference",
                        *RANDOM, "control-shuffled-outcome", "prompting", "few-shot",
                        "prompting+P"}
    assert all(sum(r["variant"] == v for r in rows) == 8 for v in variants)
    assert set(rows[0]) >= {"variant", "id", "prompt", "output", "pred", "gold", "correct"}
    assert "CorrSteer-S" in (tmp_path / "report.md").read_text()
    assert SteeringPlan.load(tmp_path / "plans" / "S.json").entries[0].layer in (0, 2, 3)
    split = SteeringPlan.load(tmp_path / "plan.json").split          # what `eval` checks its test split against
    assert {k: split[k] for k in ("task", "n_select", "n_val", "n_test", "seed")} == \
        dict(task="fake", n_select=12, n_val=4, n_test=8, seed=0) and len(split["select_val_sha256"]) == 64
    assert [c.variant for c in res.report.comparisons] == ["CorrSteer-S", "CorrSteer-A", "CorrSteer-P"]
    assert [c.variant for c in res.report.baselines] == ["raw-residual", "mean-difference", *RANDOM,
                                                      "control-shuffled-outcome"]


def test_run_records_its_settings_and_what_they_resolved_to(tiny_lm, tmp_path):
    import corrsteer

    bank = tiny_bank(tiny_lm, layers=(1, 3))
    cfg = RunConfig(n_select=8, n_val=2, n_test=2, batch_size=4, variant="S", pool="mean", scale=0.5)
    corrsteer_run(tiny_lm, bank, FakeTask(12), tmp_path / "out", cfg, sae_source="random")
    doc = json.loads((tmp_path / "out" / "config.json").read_text())
    assert doc["command"] == "run" and doc["corrsteer_version"] == corrsteer.__version__
    assert doc["settings"] == dict(cfg.to_dict(), out=str(tmp_path / "out"))   # every option, out resolved
    assert RunConfig(**doc["settings"]) == RunConfig(**dict(cfg.to_dict(), out=str(tmp_path / "out")))
    assert doc["model"] == dict(name="tiny-llama", source=tiny_lm.model.config._name_or_path, device="cpu",
                                dtype="float32")
    assert doc["saes"] == dict(source="random", layers={"1": dict(sae="random-1", hook="blocks.1.hook_resid_post"),
                                                       "3": dict(sae="random-3", hook="blocks.3.hook_resid_post")})
    assert doc["task"] == "fake"


def test_run_with_classes_ranks_within_class_and_builds_n(tiny_lm, tmp_path):
    bank = tiny_bank(tiny_lm, layers=(0, 2, 3))
    task = FakeTask(24)
    for i, it in enumerate(task.items):
        it.gold = "even" if i % 2 == 0 else "odd"
    cfg = RunConfig(n_select=12, n_val=4, n_test=6, batch_size=4, variant="A,N")
    res = corrsteer_run(tiny_lm, bank, task, tmp_path, cfg, sae_source="random")
    doc = json.loads((tmp_path / "config.json").read_text())
    assert doc["settings"]["ranking"] == "auto" and doc["ranking"] == "within-class"
    assert res.settings["ranking"] == "within-class" and res.settings["selection_measure"] == "balanced accuracy"
    assert [c.variant for c in res.report.comparisons] == ["CorrSteer-A", "CorrSteer-N"]
    n_plan = SteeringPlan.load(tmp_path / "plans" / "N.json")
    assert n_plan.entries and all(c < 0 for e in n_plan.entries for c in e.coefficients)
    a_plan = SteeringPlan.load(tmp_path / "plans" / "A.json")
    rand = res.settings["control_random_feature_1"]
    assert [int(x.split()[1]) for x in rand.split(", ")] == [e.layer for e in a_plan.entries]   # A's layers (no P)


def test_run_prompting_rows_few_shot_from_select_only(tiny_lm, tmp_path):
    bank = tiny_bank(tiny_lm, layers=(0, 2))
    task = FakeTask(24)
    cfg = RunConfig(n_select=10, n_val=4, n_test=6, batch_size=4, few_shot=3)
    res = corrsteer_run(tiny_lm, bank, task, tmp_path, cfg, sae_source="random")
    sel, val, test = task.split(10, 4, 6)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    by = {v: [r for r in rows if r["variant"] == v] for v in ("prompting", "few-shot", "prompting+P")}
    assert all([r["id"] for r in by[v]] == [it.id for it in test] for v in by)
    doc = json.loads((tmp_path / "config.json").read_text())["prompts"]
    assert doc["few_shot_ids"] and set(doc["few_shot_ids"]) <= {it.id for it in sel}
    own = {it.id: it.prompt for it in test}
    for r in by["few-shot"]:
        assert r["prompt"].endswith(own[r["id"]])
        shots = r["prompt"][:-len(own[r["id"]])]
        for it in val + test:                                  # no validation or test item among the examples
            assert it.prompt not in shots and it.id not in doc["few_shot_ids"]
        assert sum(it.prompt in shots for it in sel) == 3
    for r in by["prompting"] + by["prompting+P"]:
        assert r["prompt"] == own[r["id"]] + "\n\nAnswer with exactly one of: even."
    report = (tmp_path / "report.md").read_text()
    assert "**Headline.**" in report and "### Prompting" in report and "### Prompts" in report
    for v in by:
        assert f"| {v} |" in report
    assert doc["prompting"] in report and doc["few_shot"] in report
    assert [c.variant for c in res.report.prompting] == ["prompting", "few-shot", "prompting+P"]
    assert set(res.report.vs_p) == {"CorrSteer-S", "CorrSteer-A", "raw-residual", "mean-difference", "prompting",
                                "few-shot", "prompting+P", *RANDOM, "control-shuffled-outcome"}
    assert res.report.evaluation.classes and set(res.report.evaluation.scores) == set(res.report.vs_p) | {"CorrSteer-P"}
