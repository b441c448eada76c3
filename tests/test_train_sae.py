"""SAE training: the sparse backward equals dense autograd, training recovers a planted dictionary, banks resume."""
import json
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F

from corrsteer.cli import main, quality_table
from corrsteer.config import TrainSAEConfig, parse_layers
from corrsteer.saes import load_bank
from corrsteer.train_sae import TopKTrainer, TrainConfig, _TopKEncode, evaluate, train_bank


def test_sparse_topk_backward_matches_dense_autograd():
    g = torch.Generator().manual_seed(0)
    xc = torch.randn(37, 19, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(53, 19, generator=g, dtype=torch.float64, requires_grad=True)
    b = (torch.randn(53, generator=g, dtype=torch.float64) - 5.0).requires_grad_()   # some top-k values < 0
    up = torch.randn(37, 5, generator=g, dtype=torch.float64)
    acts, idx = _TopKEncode.apply(xc, W, b, 5)
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
    untrained = evaluate(tr.weights(), x[5000:])
    sae = tr.fit_from_raw(progress=False).weights()
    q = evaluate(sae, x[5000:])
    # 96 true directions in 32 dims, 3 active per input: training lifts FVE from ~0.4 (data-initialised) to ~0.88;
    # ~32 of the 128 latents are surplus and may die
    assert untrained["fve"] < 0.5 and q["fve"] > 0.85 and q["l0"] <= 4 and q["dead"] < 0.4, (untrained, q)
    # the raw-space SAE equals the normalised one: the same latents fire on x and on its normalised copy
    pre_raw = (x[5000:] - sae.b_dec) @ sae.W_enc + sae.b_enc
    p = tr.p
    pre_n = (tr.normalise(x[5000:]) - p["b_dec"]) @ p["W_enc_T"].t() + p["b_enc"]
    torch.testing.assert_close(pre_raw, pre_n.detach(), rtol=1e-4, atol=1e-4)


def test_train_bank_saves_resumes_and_loads(tiny_lm, tmp_path):
    cfg = TrainConfig(d_sae=96, k=8, epochs=2, batch_size=128, train_tokens=1500, eval_tokens=400)
    rows = train_bank(tiny_lm, tmp_path, layers=[0, 3], cfg=cfg, progress=False)
    meta, rows = rows[-1], rows[:-1]
    assert [r["layer"] for r in rows] == [0, 3] and meta["eval_tokens"] == 400
    assert all(0.0 < r["fve"] <= 1.0 and r["l0"] <= 8 for r in rows), rows
    saved = json.loads((tmp_path / "blocks.3.hook_resid_post" / "cfg.json").read_text())
    assert saved["metadata"]["hook_name"] == "blocks.3.hook_resid_post" and saved["k"] == 8
    bank = load_bank(str(tmp_path), lm=tiny_lm)
    assert bank.layers == [0, 3] and bank[0].sae.d_sae == 96
    before = (tmp_path / "blocks.0.hook_resid_post" / "sae_weights.safetensors").stat().st_mtime_ns
    again = train_bank(tiny_lm, tmp_path, layers=[0, 3], cfg=cfg, progress=False)[:-1]   # resumes: same quality
    assert (tmp_path / "blocks.0.hook_resid_post" / "sae_weights.safetensors").stat().st_mtime_ns == before
    assert [round(r["fve"], 6) for r in again] == [round(r["fve"], 6) for r in rows]
    assert "| 3 | blocks.3.hook_resid_post |" in quality_table(rows)


def test_cli_layer_ranges_and_help(capsys):
    assert parse_layers("0-3,7,9-10") == [0, 1, 2, 3, 7, 9, 10] and parse_layers(None) is None
    with pytest.raises(SystemExit):
        main(["train-sae", "--help"])
    assert "--train-tokens" in capsys.readouterr().out


def test_train_sae_and_the_sae_run_trains_itself_share_one_set_of_defaults():
    """The trainer's defaults are `corrsteer train-sae`'s (they once differed: epochs 2.0 vs --epochs 3.0)."""
    cmd = TrainSAEConfig()
    assert all(getattr(cmd, f.name) == getattr(TrainConfig(), f.name) for f in fields(TrainConfig))
