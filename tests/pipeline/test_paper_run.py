"""`corrsteer run` on the paper's tasks end to end, offline: fixtures in each hub schema, the tiny random model,
random SAEs; constrained decoding; rankings, P combination, hook site, seeds, presets and the CLI path."""
import itertools
import json

import pytest
from fakes import tiny_bank
from hub_fixtures import write_fixture

from corrsteer.config import RunConfig
from corrsteer.model.generate import generate_batch
from corrsteer.pipeline.run import corrsteer_run
from corrsteer.report.render import render
from corrsteer.tasks.hub import load_hub_task
from corrsteer.tasks.protocols import Scorers


def _alternating():
    """A stand-in model scorer: every other call says yes (deterministic, and both outcomes on any split)."""
    calls = itertools.count()
    return lambda batch: [next(calls) % 2 == 0 for _ in batch]


def _task(tmp_path, name, **kw):
    """A hub task from its fixture; tasks the random model never gets right go through the model-scorer hook with
    a stand-in, so the selection has both outcomes to correlate with."""
    kw.setdefault("scorer_models", "builtin")
    task = load_hub_task(name, task_path=write_fixture(tmp_path / "data", name), **kw)
    if task.kind == "refusal":
        task.scorers = Scorers(refusal=_alternating())
    elif task.kind == "short":
        alt = _alternating()
        task.scorers = Scorers(sts=lambda pairs: [float(v) for v in alt(pairs)])
    return task


def test_constrained_first_token(tiny_lm):
    prompts = ["Question: one?", "Question: two, longer?"]
    free = generate_batch(tiny_lm, prompts, 3)
    ids = [tiny_lm.tokenizer(" B", add_special_tokens=False)["input_ids"][0]]
    out = generate_batch(tiny_lm, prompts, 3, allowed_first_tokens=ids)
    first = [tiny_lm.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in out.texts]
    assert first == ids * 2
    top = generate_batch(tiny_lm, prompts, 1).texts     # allowing the free argmax changes nothing
    allowed = [tiny_lm.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in top] + ids
    assert generate_batch(tiny_lm, prompts, 3, allowed_first_tokens=allowed).texts == free.texts
    with pytest.raises(ValueError, match="vocabulary size"):
        generate_batch(tiny_lm, prompts, 1, allowed_first_tokens=[10 ** 9])


@pytest.mark.parametrize("name,protocol", [("mmlu", "paper"), ("mmlu-pro", "paper"), ("bbq", "paper"),
                                           ("gsm8k", "paper"), ("simpleqa", "paper"), ("harmbench", "chat"),
                                           ("xstest", "paper")])
def test_run_each_task_end_to_end_offline(tiny_lm, tmp_path, monkeypatch, name, protocol):
    mc = name in ("mmlu", "mmlu-pro", "bbq")
    task = _task(tmp_path, name, protocol=protocol, constrain=mc, max_new=None if mc else 6)
    if name == "gsm8k":
        import corrsteer.tasks.protocols as P
        alt = _alternating()
        monkeypatch.setattr(P, "final_number", lambda text: "1" if alt([text])[0] else "2")
        monkeypatch.setattr(P, "_canon", lambda g: "1")             # every other answer counts as right
    # 10 items over 4 letters: too few per class; MMLU-Pro's 10-option items in 3 shots exceed the tiny model's
    # 512-token context, which a run refuses before generating (docs/bad-input.md row prompt-too-long-few-shot)
    cfg = RunConfig(task=name, protocol=protocol, n_select=10, n_val=2, n_test=4, batch_size=5, layers="0,2",
                    scorer_models="builtin", ranking="pearson", few_shot=1 if name == "mmlu-pro" else 3)
    corrsteer_run(tiny_lm, tiny_bank(tiny_lm, layers=(0, 2)), task, tmp_path / "out", cfg, sae_source="random")
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert rows and all(set(r) >= {"prompt", "gold", "output", "pred", "correct"} for r in rows)
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"| protocol | {protocol} |" in report and "| splits |" in report and "| scorer |" in report
    render(tmp_path / "out", tmp_path / "again", plots=False)                  # `corrsteer report`: the same bytes
    assert (tmp_path / "again" / "report.md").read_text() == report
    if mc:
        assert all(r["gold"] in "ABCDEFGHIJ" and r["output"].strip() in "ABCDEFGHIJ" for r in rows)
        assert "Choose one of the following options only" in rows[0]["prompt"]
    if name in ("harmbench", "xstest"):
        assert {r["gold"] for r in rows} <= {"refuse", "comply"}


@pytest.mark.parametrize("ranking", ["mi", "fisher", "caa"])
def test_rankings_run_from_the_same_pass(tiny_lm, tmp_path, ranking):
    task = _task(tmp_path, "mmlu", protocol="paper", constrain=True)
    cfg = RunConfig(task="mmlu", n_select=12, n_val=2, n_test=3, batch_size=6, ranking=ranking, variant="S")
    res = corrsteer_run(tiny_lm, tiny_bank(tiny_lm, layers=(1, 3)), task, tmp_path / "o", cfg, sae_source="random")
    assert res.settings["ranking"] == ranking
    from safetensors.torch import load_file
    stats = load_file(str(tmp_path / "o" / "stats.safetensors"))
    assert stats["layer1.hist"].shape == (2, 23, 40) and "layer1.sum_z2_pos" in stats


def test_p_combine_all_and_paper_hook_site(tiny_lm, tmp_path, monkeypatch):
    import corrsteer.pipeline.prefix as S
    from corrsteer.method.variants import variant_p
    monkeypatch.setattr(S, "variant_p", lambda cands, val_acc, base, random=None: variant_p(cands, val_acc, -1.0))
    task = _task(tmp_path, "mmlu", protocol="paper", constrain=True)
    cfg = RunConfig(task="mmlu", n_select=12, n_val=3, n_test=3, batch_size=6, p_combine="all", hook_site="paper",
                    ranking="pearson")
    res = corrsteer_run(tiny_lm, tiny_bank(tiny_lm, layers=(1, 3)), task, tmp_path / "o", cfg, sae_source="random")
    assert "all kept layers" in res.settings["P_combine"] and res.settings["hook_site"] == "paper"
    doc = json.loads((tmp_path / "o" / "config.json").read_text())
    assert doc["saes"]["layers"]["1"]["hook"] == "blocks.1.hook_resid_pre"
    plan = json.loads((tmp_path / "o" / "plans" / "P.json").read_text())
    val = json.loads((tmp_path / "o" / "validation.json").read_text())
    assert val["p_prefix_accuracy"] == []                                        # no prefix search
    assert sorted(e["layer"] for e in plan["entries"]) == sorted(int(L) for L in val["per_layer"])
    assert len(plan["entries"]) == 2                                             # every kept layer, together


def test_seeds_write_the_table(tiny_lm, tmp_path):
    from corrsteer.pipeline.seeds import run_seeds, table_md
    task = _task(tmp_path, "mmlu", protocol="paper", constrain=True)
    cfg = RunConfig(task="mmlu", n_select=10, n_val=2, n_test=3, batch_size=5, variant="A", seeds="0,1",
                    saes="random", ranking="pearson")
    per_seed = run_seeds(tiny_lm, tiny_bank(tiny_lm, layers=(1, 3)), task, tmp_path / "o", cfg)
    assert sorted(per_seed) == [0, 1] and (tmp_path / "o" / "seed1" / "report.md").exists()
    table = (tmp_path / "o" / "table.md").read_text()
    assert table.startswith("| Method | mmlu |") and "| CorrSteer-A |" in table and " ± " in table
    assert "| constant answer |" in table and "| few-shot |" in table and "Test balanced accuracy (%)" in table
    t = table_md("x", {0: {"baseline": 0.5}, 1: {"baseline": 0.7}})
    assert "| baseline | 60.0 ± 14.1 |" in t


def test_presets_and_neuronpedia_links():
    from corrsteer.method.rank import Candidate
    from corrsteer.sae.presets import apply_preset, feature_links, neuronpedia_url
    cfg = apply_preset(RunConfig(preset="gemma-2-2b"))
    assert (cfg.model, cfg.saes, cfg.layers) == ("google/gemma-2-2b-it", "release:gemma-scope-2b-pt-res-canonical",
                                                 "0-25")
    kept = apply_preset(RunConfig(preset="llama-3.1-8b", layers="3,5"))
    assert kept.layers == "3,5" and kept.saes == "release:llama_scope_lxr_8x"
    assert neuronpedia_url("release:gemma-scope-2b-pt-res-canonical", 12, 345) == \
        "https://www.neuronpedia.org/gemma-2-2b/12-gemmascope-res-16k/345"
    pick = Candidate(layer=1, feature=2, r=0.1, score=0.1, freq=0.5, coef=1.0)
    assert neuronpedia_url("random", 1, 2) is None and feature_links("trained", {"S": [pick]}) == []
    from corrsteer.sae.bank import RELEASE_IDS
    assert RELEASE_IDS["gemma-scope-2b-pt-res-canonical"] == "layer_{L}/width_16k/canonical"
    assert RELEASE_IDS["llama_scope_lxr_8x"] == "l{L}r_8x"


def test_cli_run_on_a_task_path(tiny_lm, tmp_path, monkeypatch, capsys):
    """`corrsteer run --task xstest --task-path DIR` through the CLI (model and SAEs swapped for the tiny ones)."""
    import corrsteer.cli.main as cli
    import corrsteer.tasks.hub_scorers as hs
    from corrsteer.cli import commands
    monkeypatch.setattr(commands, "load_lm", lambda cfg, default=None, device=None: tiny_lm)
    monkeypatch.setattr(commands, "load_saes", lambda lm, cfg: tiny_bank(tiny_lm, layers=(1, 3)))
    alt = _alternating()
    monkeypatch.setattr(hs, "_refusal_pipeline", lambda: (lambda texts: [{"label": "REJECTION" if a else "NORMAL"}
                                                                         for a in alt(texts)]))
    d = write_fixture(tmp_path, "xstest")
    assert cli.main(["run", "--task", "xstest", "--task-path", str(d), "--protocol", "paper", "--n-select", "6",
                     "--n-val", "1", "--n-test", "4", "--batch-size", "6", "--max-new-tokens", "5",
                     "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "refusal classifier ProtectAI/distilroberta-base-rejection-v1" in out and "walledai/XSTest" in out
