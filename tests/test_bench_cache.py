"""bench/bench_cache.py: the three ways (fused, sae-lens dense, delphi-style sparse cache) compute the same Pearson r
as the float64 reference on the same stream, and the planted feature comes out on top."""
import pytest
import torch

from bench import bench_cache as bc

pytest.importorskip("sae_lens")


def run_all(shape, n, tmp_path, max_len=5, signal=4.0):
    sae = bc.make_sae(shape, seed=3)
    lens = bc.sae_lens_sae(sae)

    def stream():
        return bc.batches(sae, n, max_len, tokens_per_batch=40, signal=signal, seed=3)
    return dict(reference=bc.run_reference(sae, stream())[0], fused=bc.run_fused(sae, stream())[0],
                dense=bc.run_dense(sae, stream(), n, lens)[0],
                sparse=bc.run_sparse_cache(sae, stream(), str(tmp_path), lens)[0])


def test_methods_agree_with_float64_reference(tmp_path, monkeypatch):
    monkeypatch.setitem(bc.SHAPES, "small-jumprelu", (24, 301, "jumprelu", None))
    monkeypatch.setitem(bc.SHAPES, "small-topk", (32, 200, "topk", 9))
    for name in ("small-topk", "small-jumprelu"):
        r = run_all(name, 97, tmp_path)
        for m in ("fused", "dense", "sparse"):
            assert torch.allclose(r[m], r["reference"], atol=2e-5), (name, m, (r[m] - r["reference"]).abs().max())
        assert int(r["reference"].argmax()) == bc.PLANTED


def test_batches_cover_every_sample_once_and_respect_the_token_budget():
    sae = bc.make_sae("default-topk-2304", seed=0)
    seen = 0
    for x, L, y in bc.batches(sae, 53, 9, tokens_per_batch=20, signal=1.0, seed=0):
        assert x.shape[0] == int(L.sum()) and (x.shape[0] <= 20 or L.shape[0] == 1)
        assert L.min() >= 1 and L.max() <= 9 and y.shape == L.shape
        seen += L.shape[0]
    assert seen == 53


def test_compare_flags_a_method_that_disagrees():
    r = torch.linspace(-1, 1, 50, dtype=torch.float64)
    res = {"fused": dict(r=r.tolist(), top=torch.argsort(r, descending=True)[:10].tolist()),
           "dense": dict(r=(-r).tolist(), top=torch.argsort(-r, descending=True)[:10].tolist())}
    out = bc.compare(res)["dense"]
    assert not out["same_top1"] and out["top10_overlap"] == 0 and out["max_abs_r_diff"] == pytest.approx(2.0)
