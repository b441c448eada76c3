"""SAE training: the sparse backward equals dense autograd, training recovers a planted dictionary, banks resume."""
import json
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F

from corrsteer.cli.main import main
from corrsteer.config import TrainSAEConfig
from corrsteer.sae import train as train_sae
from corrsteer.sae.bank import load_bank
from corrsteer.sae.cache import quality_table
from corrsteer.sae.train import TopKTrainer, TrainConfig, _TopKDecode, _TopKEncode, sae_quality, train_bank
from corrsteer.settings import parse_layers


def test_sparse_topk_backward_matches_dense_autograd():
    g = torch.Generator().manual_seed(0)
    xc = torch.randn(37, 19, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(53, 19, generator=g, dtype=torch.float64, requires_grad=True)
    b = (torch.randn(53, generator=g, dtype=torch.float64) - 5.0).requires_grad_()   # some top-k values < 0
    up = torch.randn(37, 5, generator=g, dtype=torch.float64)
    acts, idx, *_ = _TopKEncode.apply(xc, W, b, 5)
    (acts * up).sum().backward()
    got = [t.grad.clone() for t in (xc, W, b)]
    for t in (xc, W, b):
        t.grad = None
    pre = xc @ W.t() + b                                   # dense reference, same selection
    dense = torch.zeros_like(pre).scatter(1, idx, 1.0) * pre
    (F.relu(dense.gather(1, idx)) * up).sum().backward()
    for a, t in zip(got, (xc, W, b)):
        torch.testing.assert_close(a, t.grad)
    assert (acts == 0).any() and (acts > 0).any()          # both relu branches exercised


def test_sparse_topk_decode_backward_matches_dense_autograd():
    """The decoder's weight gradient (grouped by latent, no GEMM) and activation gradient equal dense autograd's,
    with latents chosen by several tokens, by one, and by none."""
    g = torch.Generator().manual_seed(1)
    xc = torch.randn(11, 13, generator=g, dtype=torch.float64)
    W = torch.randn(29, 13, generator=g, dtype=torch.float64)
    _, idx, *groups = _TopKEncode.apply(xc, W, torch.zeros(29, dtype=torch.float64), 3)
    counts = torch.bincount(idx.flatten(), minlength=29)
    assert (counts == 0).any() and (counts == 1).any() and (counts > 1).any()
    acts = torch.rand(11, 3, generator=g, dtype=torch.float64, requires_grad=True)
    D = torch.randn(29, 13, generator=g, dtype=torch.float64, requires_grad=True)
    up = torch.randn(11, 13, generator=g, dtype=torch.float64)
    (_TopKDecode.apply(acts, idx, D, None, *groups) * up).sum().backward()
    got = [acts.grad.clone(), D.grad.clone()]
    acts.grad = D.grad = None
    dense = torch.zeros(11, 29, dtype=torch.float64).scatter(1, idx, 1.0)
    ((dense.scatter(1, idx, acts) @ D) * up).sum().backward()
    for a, t in zip(got, (acts, D)):
        torch.testing.assert_close(a, t.grad)


def planted(n=6000, d=32, n_feat=96, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = F.normalize(torch.randn(n_feat, d, generator=g), dim=1)
    idx = torch.stack([torch.randperm(n_feat, generator=g)[:k] for _ in range(n)])
    coef = 1 + torch.rand(n, k, generator=g)
    x = (coef[:, :, None] * D[idx]).sum(1)
    return 40 * x + 7.0                                    # far from unit scale and centre: normalisation must cope


def test_training_recovers_a_planted_sparse_dictionary():
    x = planted()
    tr = TopKTrainer(x[:5000], TrainConfig(d_sae=128, k=4, epochs=25, batch_size=256, lr=3e-3, dead_after=2000))
    untrained = sae_quality(tr.weights(), x[5000:])
    sae = tr.fit_from_raw(progress=False).weights()
    q = sae_quality(sae, x[5000:])
    # 96 true directions in 32 dims, 3 active per input: training lifts FVE from ~0.4 (data-initialised) to ~0.88;
    # ~32 of the 128 latents are surplus and may die
    assert untrained["fve"] < 0.5 and q["fve"] > 0.85 and q["l0"] <= 4 and q["dead"] < 0.4, (untrained, q)
    # the raw-space SAE equals the normalised one: the same latents fire on x and on its normalised copy
    pre_raw = (x[5000:] - sae.b_dec) @ sae.W_enc + sae.b_enc
    p = tr.p
    pre_n = (tr.normalise(x[5000:]) - p["b_dec"]) @ p["W_enc_T"].t() + p["b_enc"]
    torch.testing.assert_close(pre_raw, pre_n.detach(), rtol=1e-4, atol=1e-4)


def test_quality_counts_dead_latents_over_both_sets_in_two_passes(monkeypatch):
    """_quality's dead fraction (latents firing in neither set) equals one evaluation of the union's, without it."""
    x = planted(n=1200)
    trainer = TopKTrainer(x[:800], TrainConfig(d_sae=256, k=4, epochs=1, batch_size=128))
    sae = trainer.fit_from_raw(progress=False).weights()
    docs, chat = x[800:1000], x[1000:] * 0.5
    union = sae_quality(sae, torch.cat([docs, chat]))["dead"]
    assert 0 < union < sae_quality(sae, docs)["dead"] and union < sae_quality(sae, chat)["dead"]
    monkeypatch.setattr(train_sae, "sae_quality", _counting(train_sae.sae_quality))
    q = train_sae._quality(sae, docs, chat)
    assert q["dead"] == union and train_sae.sae_quality.calls == 2
    assert q["fve_chat"] == q["fve"] == sae_quality(sae, chat)["fve"] and q["fve_docs"] == sae_quality(sae, docs)["fve"]


TINY = dict(d_sae=96, k=8, epochs=2, batch_size=128, train_tokens=1500, eval_tokens=400, chat_prompts=24,
            answer_tokens=8, eval_task_prompts=3)


def test_train_bank_saves_resumes_and_loads(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("CORRSTEER_CACHE", str(tmp_path / "cache"))       # the cached answers
    cfg = TrainConfig(**TINY)
    done = train_bank(tiny_lm, tmp_path / "saes", layers=[0, 3], cfg=cfg, progress=False)
    meta, rows = done.meta, done.rows
    assert [r["layer"] for r in rows] == [0, 3] and meta["eval_tokens_chat"] == 400 and meta["trained"] == 2
    assert all(0.0 < r["fve"] <= 1.0 and 0.0 < r["fve_docs"] <= 1.0 and r["l0"] <= 8 for r in rows), rows
    saved = json.loads((tmp_path / "saes" / "blocks.3.hook_resid_post" / "cfg.json").read_text())
    assert saved["metadata"]["hook_name"] == "blocks.3.hook_resid_post" and saved["k"] == 8
    assert not (tmp_path / "saes" / ".activations").exists()          # scratch activations are cleaned up
    bank = load_bank(str(tmp_path / "saes"), lm=tiny_lm)
    assert bank.layers == [0, 3] and bank[0].sae.d_sae == 96
    before = (tmp_path / "saes" / "blocks.0.hook_resid_post" / "sae_weights.safetensors").stat().st_mtime_ns
    # resume: layer 0 and 3 are done, only 1 is trained; the others are neither retrained nor re-evaluated
    monkeypatch.setattr(train_sae, "sae_quality", _counting(train_sae.sae_quality))
    again = train_bank(tiny_lm, tmp_path / "saes", layers=[0, 1, 3], cfg=cfg, progress=False)
    assert again.meta["trained"] == 1 and train_sae.sae_quality.calls == 2      # docs, chat: layer 1 only
    assert (tmp_path / "saes" / "blocks.0.hook_resid_post" / "sae_weights.safetensors").stat().st_mtime_ns == before
    assert [r["fve"] for r in again.rows if r["layer"] != 1] == [r["fve"] for r in rows]
    assert "| 3 | blocks.3.hook_resid_post |" in quality_table(rows)


def _counting(fn):
    def wrapped(*a, **kw):
        wrapped.calls += 1
        return fn(*a, **kw)
    wrapped.calls = 0
    return wrapped


def _tensors(folder):
    from safetensors.torch import load_file
    return {p.parent.name: load_file(str(p)) for p in sorted(folder.glob("*/sae_weights.safetensors"))}


def test_training_twice_from_empty_caches_gives_identical_tensors(tiny_lm, tmp_path, monkeypatch):
    """Same inputs and seed -> bit-identical SAEs, whatever the thread count torch had before, and with the answers
    generated afresh each time (separate caches)."""
    cfg = TrainConfig(**TINY)
    out = []
    for i, threads in enumerate((1, 2)):
        monkeypatch.setenv("CORRSTEER_CACHE", str(tmp_path / f"cache{i}"))
        torch.set_num_threads(threads)
        train_bank(tiny_lm, tmp_path / f"saes{i}", layers=[1, 2], cfg=cfg, progress=False)
        out.append(_tensors(tmp_path / f"saes{i}"))
    torch.set_num_threads(2)
    assert list(out[0]) == ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"] == list(out[1])
    for name in out[0]:
        for key, t in out[0][name].items():
            assert torch.equal(t, out[1][name][key]), (name, key)
    answers = [sorted((tmp_path / f"cache{i}" / "chat").rglob("*.jsonl")) for i in (0, 1)]
    assert [p.name for p in answers[0]] == [p.name for p in answers[1]] and answers[0]
    texts = [[[a for line in p.read_text().splitlines() for a in json.loads(line)["answers"]] for p in ps]
             for ps in answers]
    assert texts[0] == texts[1]


def test_run_trains_only_missing_layers_and_never_re_evaluates(tiny_lm, tmp_path, monkeypatch):
    """`corrsteer run`'s bank: layers in the cache are loaded as they are; only missing ones are trained, and the
    training writes quality.json/.md (every cached layer) and config.json as `corrsteer train-sae` does."""
    import functools

    from corrsteer.cli import commands
    from corrsteer.config import RunConfig
    from corrsteer.sae import cache

    monkeypatch.setenv("CORRSTEER_CACHE", str(tmp_path / "cache"))
    sae_dir = tmp_path / "saes"
    monkeypatch.setattr(cache, "TrainSAEConfig", functools.partial(TrainSAEConfig, **TINY))
    run_cfg = RunConfig(sae_dir=str(sae_dir), layers="0-1", device="cpu")
    bank = commands.load_saes(tiny_lm, run_cfg)
    assert bank.layers == [0, 1]
    q = json.loads((sae_dir / "quality.json").read_text())
    assert [r["layer"] for r in q["rows"]] == [0, 1] and (sae_dir / "quality.md").exists()
    assert json.loads((sae_dir / "config.json").read_text())["command"] == "train-sae"

    def boom(*a, **kw):
        raise AssertionError("trained or evaluated again")
    monkeypatch.setattr(cache, "train_bank", boom)
    monkeypatch.setattr(train_sae, "sae_quality", boom)
    assert commands.load_saes(tiny_lm, run_cfg).layers == [0, 1]                 # loaded, nothing else
    monkeypatch.undo()
    monkeypatch.setenv("CORRSTEER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "TrainSAEConfig", functools.partial(TrainSAEConfig, **TINY))
    monkeypatch.setattr(train_sae, "sae_quality", _counting(train_sae.sae_quality))
    assert commands.load_saes(tiny_lm, RunConfig(sae_dir=str(sae_dir), layers="0-2", device="cpu")).layers == [0, 1, 2]
    assert train_sae.sae_quality.calls == 2                                   # layer 2 only (docs, chat)
    q = json.loads((sae_dir / "quality.json").read_text())
    assert [r["layer"] for r in q["rows"]] == [0, 1, 2]


def test_cli_layer_ranges_and_help(capsys):
    assert parse_layers("0-3,7,9-10") == [0, 1, 2, 3, 7, 9, 10] and parse_layers(None) is None
    with pytest.raises(SystemExit):
        main(["train-sae", "--help"])
    assert "--train-tokens" in capsys.readouterr().out


def test_train_sae_and_the_sae_run_trains_itself_share_one_set_of_defaults():
    """The trainer's defaults are `corrsteer train-sae`'s (they once differed: epochs 2.0 vs --epochs 3.0)."""
    cmd = TrainSAEConfig()
    assert all(getattr(cmd, f.name) == getattr(TrainConfig(), f.name) for f in fields(TrainConfig))


def test_two_runs_on_a_trained_bank_give_identical_plans_and_predictions(tiny_lm, tmp_path, monkeypatch):
    from fakes import FakeTask

    from corrsteer.pipeline.run import RunConfig, corrsteer_run
    monkeypatch.setenv("CORRSTEER_CACHE", str(tmp_path / "cache"))
    train_bank(tiny_lm, tmp_path / "saes", layers=[1, 2, 3], cfg=TrainConfig(**TINY), progress=False)
    cfg = RunConfig(n_select=12, n_val=4, n_test=8, batch_size=4)
    for i in (0, 1):
        bank = load_bank(str(tmp_path / "saes"), lm=tiny_lm)
        corrsteer_run(tiny_lm, bank, FakeTask(24), tmp_path / f"run{i}", cfg, sae_source="trained")
    for name in ("plans/S.json", "plans/A.json", "plans/P.json", "predictions.jsonl", "validation.json"):
        assert (tmp_path / "run0" / name).read_bytes() == (tmp_path / "run1" / name).read_bytes(), name


def test_banks_of_two_seeds_share_kept_activations_and_record_their_training(tiny_lm, tmp_path, monkeypatch):
    """--keep-activations: the second seed's bank reads the first's activations (no forward pass), its weights
    differ (seed), and equal a bank trained from a fresh collection with that seed; the training record names the
    arithmetic (float32 by default, whatever the CPU), the seeds and a digest that tells the banks apart."""
    from corrsteer.sae import train as T
    from corrsteer.sae.bank import training_record
    monkeypatch.setenv("CORRSTEER_CACHE", str(tmp_path / "cache"))
    keep = tmp_path / "acts"
    first = train_bank(tiny_lm, tmp_path / "s0", layers=[1, 2], cfg=TrainConfig(**TINY), progress=False,
                       keep_activations=keep)
    assert (keep / T.KEY_FILE).exists() and (keep / "train" / "blocks.1.hook_resid_post.f16").exists()
    monkeypatch.setattr(T, "collect_to_disk", lambda *a, **kw: pytest.fail("collected again"))
    again = train_bank(tiny_lm, tmp_path / "s1", layers=[1, 2], cfg=TrainConfig(**TINY, seed=1), progress=False,
                       keep_activations=keep)
    assert again.meta["reused_activations"] == str(keep) and again.meta["train_tokens"] == first.meta["train_tokens"]
    monkeypatch.undo()
    monkeypatch.setenv("CORRSTEER_CACHE", str(tmp_path / "cache"))
    train_bank(tiny_lm, tmp_path / "fresh1", layers=[1, 2], cfg=TrainConfig(**TINY, seed=1), progress=False)
    t0, t1, fresh = (_tensors(tmp_path / n) for n in ("s0", "s1", "fresh1"))
    assert not torch.equal(t0["blocks.1.hook_resid_post"]["W_dec"], t1["blocks.1.hook_resid_post"]["W_dec"])
    assert all(torch.equal(t, fresh[n][k]) for n in t1 for k, t in t1[n].items())
    recs = [training_record([tmp_path / n / f"blocks.{L}.hook_resid_post" for L in (1, 2)])
            for n in ("s0", "s1", "fresh1")]
    assert recs[0]["arithmetic"] == "float32" and recs[0]["seed"] == 0 and recs[1]["seed"] == 1
    assert recs[0]["corpus_seed"] == recs[1]["corpus_seed"] == 0
    assert recs[0]["digest"] != recs[1]["digest"] == recs[2]["digest"]
    assert T.training_dtype("float32") == torch.float32 and TrainConfig().matmul_dtype == "float32"
