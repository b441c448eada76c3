"""PreparedBatch: a batch prepared once, folded layer after layer (different SAEs, tokens and pools), equals
stats.update of the float64 reference per layer; what the batch holds is computed once; bad per-layer inputs."""
import pytest
import torch
from cases import make_case
from conftest import FAST_BACKENDS, on_backend

from corrsteer_kernels import CorrStats, encode_pool_reference, encode_pool_stats_prepared, pack_tokens, prepare_batch
from corrsteer_kernels import torch_path as tp
from corrsteer_kernels.corr_stats import FEATURE_FIELDS, scalar_sums

LENGTHS = [0, 1, 9, 0, 1, 1, 17, 2, 5, 1]


def close(got: CorrStats, want: CorrStats):
    torch.testing.assert_close(got.scalars, want.scalars, rtol=1e-12, atol=1e-12)
    feats = got.sums_at(want.shift)                   # shifted sums compare under one shift
    for i, name in enumerate(FEATURE_FIELDS):
        if name.startswith("n_"):
            assert torch.equal(feats[i], want.features[i]), name
        else:
            torch.testing.assert_close(feats[i], want.features[i], rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_layers_of_one_prepared_batch(backend):
    """Three layers (relu, jumprelu, topk; odd sizes), both pools, one PreparedBatch: each layer's statistics equal
    the reference's, and the batch's groups are built once (one set for both pools) and reused."""
    y = torch.randn(len(LENGTHS), generator=torch.Generator().manual_seed(3))
    L = torch.tensor(LENGTHS)
    batch = None
    for i, act in enumerate(["relu", "jumprelu", "topk"]):
        x, _, sae = make_case(200 + i, len(LENGTHS), 17, 13, 29 + 2 * i, act, lengths=LENGTHS, k=3)
        xp = pack_tokens(x, L)
        xp, Ld, yd, sae = on_backend(backend, xp, L, y, sae)
        if batch is None:
            batch = prepare_batch(Ld, yd, n_tokens=xp.shape[0])
            assert torch.equal(batch.scalars, scalar_sums(yd))
        for pool in ("max", "mean"):
            got = encode_pool_stats_prepared(xp, batch, sae, CorrStats(sae.d_sae, device=xp.device), pool,
                                             backend=backend)
            want = CorrStats(sae.d_sae).update(encode_pool_reference(xp.cpu(), L, sae.to("cpu"), pool), y)
            close(_cpu(got), want)
    if backend == "torch":
        kept = {k: v for k, v in batch.cache.items() if isinstance(k, tuple)}
        block = tp.CPU_TILE_ELEMENTS * tp.LONG_BLOCK_SCALE               # relu (29 wide), jumprelu (31): one set
        assert set(kept) == {("groups", block // 29), ("groups", block // 31)}   # of groups each, for both pools
        again = dict(batch.cache)
        x, _, sae = make_case(210, len(LENGTHS), 17, 13, 31, "relu", lengths=LENGTHS)
        encode_pool_stats_prepared(pack_tokens(x, L), batch, sae, CorrStats(31), "mean", backend="torch")
        assert all(batch.cache[k] is v for k, v in again.items())          # reused, not rebuilt


def _cpu(st: CorrStats) -> CorrStats:
    return CorrStats.from_state_dict({k: v.cpu() for k, v in st.state_dict().items()})


def test_prepare_checks_and_per_layer_shapes():
    with pytest.raises(ValueError, match="lengths must lie"):
        prepare_batch(torch.tensor([2, -1]), torch.zeros(2))
    with pytest.raises(ValueError, match="non-finite"):
        prepare_batch(torch.tensor([2, 1]), torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="y must have shape"):
        prepare_batch(torch.tensor([2, 1]), torch.zeros(3), check=False)
    batch = prepare_batch(torch.tensor([2, 1]), torch.tensor([1.0, 0.0]))
    assert batch.n_tokens == 3
    x, _, sae = make_case(220, 2, 2, 6, 10, "relu", lengths=[2, 1])
    with pytest.raises(ValueError, match=r"packed \[3, 6\]"):
        encode_pool_stats_prepared(torch.randn(4, 6), batch, sae, CorrStats(10))
    with pytest.raises(ValueError, match="CorrStats of d_sae=10"):
        encode_pool_stats_prepared(torch.randn(3, 6), batch, sae, CorrStats(11))
    st = encode_pool_stats_prepared(torch.zeros(3, 6), batch, sae, CorrStats(10), backend="torch")
    assert st.scalars.tolist() == [2.0, 1.0, 1.0, 1.0]
