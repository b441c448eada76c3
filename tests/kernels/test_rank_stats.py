"""RankStats (MI / Fisher / CAA rankings) against float64 recomputations from the raw pooled values."""
import math

import pytest
import torch
from cases import make_sae
from conftest import FAST_BACKENDS, on_backend

from corrsteer.method.rank import layer_candidates, make_stats, ranked_features
from corrsteer_kernels import BIN_EDGES, N_BINS, CorrStats, RankStats, encode_pool, encode_pool_reference
from corrsteer_kernels.rank_stats import FISHER_EPS, bin_index


def _data(B=40, F=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.relu(torch.randn(B, F, generator=g, dtype=torch.float64)) * torch.rand(B, F, generator=g,
                                                                                     dtype=torch.float64) * 3
    z[:, 0] = 0.0                                           # never active
    y = (torch.rand(B, generator=g) > 0.5).double()
    z[:, 1] = y * 2.0 + 0.01                                # perfectly informative
    return z, y


def _ref_bin(x: float) -> int:
    return sum(1 for e in BIN_EDGES if e <= x)


def _ref(z, y):
    """Plain-Python float64 CAA, Fisher ratio and MI per feature."""
    pos = [i for i in range(len(y)) if y[i] > 0]
    neg = [i for i in range(len(y)) if y[i] <= 0]
    caa, fisher, mi = [], [], []
    n = len(y)
    for j in range(z.shape[1]):
        col = [float(z[i, j]) for i in range(n)]
        caa.append(sum(col[i] for i in pos) / len(pos) - sum(col[i] for i in neg) / len(neg))
        e1 = sum(col[i] ** 2 for i in pos) / len(pos)
        e0 = sum(col[i] ** 2 for i in neg) / len(neg)
        fisher.append(e1 / max(e0, FISHER_EPS))
        joint = {}
        for i in range(n):
            key = (int(y[i] > 0), _ref_bin(col[i]))
            joint[key] = joint.get(key, 0) + 1
        pc = {c: sum(v for (cc, _), v in joint.items() if cc == c) / n for c in (0, 1)}
        pb = {}
        for (c, b), v in joint.items():
            pb[b] = pb.get(b, 0) + v / n
        mi.append(sum(v / n * math.log((v / n) / (pc[c] * pb[b])) for (c, b), v in joint.items()))
    f64 = dict(dtype=torch.float64)
    return torch.tensor(caa, **f64), torch.tensor(fisher, **f64), torch.tensor(mi, **f64)


def test_bins_are_the_23_log_spaced_bins():
    assert N_BINS == 23 and len(BIN_EDGES) == 22
    expected = sorted([10 ** (d + k / 4) for d in range(-6, 1) for k in (1, 2, 3)] + [1.0])
    assert list(BIN_EDGES) == pytest.approx(expected, rel=1e-15)
    x = torch.tensor([-1.0, 0.0, 1e-7, BIN_EDGES[0], 0.999999, 1.0, 5.0, 10 ** 0.75, 1e6], dtype=torch.float64)
    assert bin_index(x).tolist() == [_ref_bin(float(v)) for v in x]
    assert bin_index(x).tolist() == [0, 0, 0, 1, 18, 19, 21, 22, 22]   # an edge belongs to the bin above it


def test_rankings_match_a_float64_recomputation():
    z, y = _data()
    st = RankStats(z.shape[1]).update(z, y)
    caa, fisher, mi = _ref(z, y)
    torch.testing.assert_close(st.caa(), caa, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st.fisher(), fisher, rtol=1e-9, atol=1e-12)   # E[z^2|neg] is a difference of sums
    torch.testing.assert_close(st.mutual_information(), mi, rtol=1e-10, atol=1e-12)
    assert st.hist.sum().item() == z.numel()
    torch.testing.assert_close(st.pearson(), CorrStats(z.shape[1]).update(z, y).pearson())   # CorrStats part intact
    assert int(st.mutual_information().argmax()) == 1 and st.mutual_information()[0] == 0


def test_streamed_batches_and_merge_equal_one_pass():
    z, y = _data(B=50)
    whole = RankStats(z.shape[1]).update(z, y)
    a, b = RankStats(z.shape[1]), RankStats(z.shape[1])
    for i in range(0, 50, 7):
        (a if i < 25 else b).update(z[i:i + 7], y[i:i + 7])
    a.merge(b).rebase_to(whole.shift)        # shifted sums compare under one shift
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(a.state_dict()[k], v, rtol=1e-12, atol=1e-12)
    again = RankStats(z.shape[1]).load_state_dict(whole.state_dict())
    torch.testing.assert_close(again.mutual_information(), whole.mutual_information())
    with pytest.raises(KeyError, match="sum_z2_pos"):
        RankStats(z.shape[1]).load_state_dict(CorrStats(z.shape[1]).update(z, y).state_dict())


def test_one_class_only_gives_zero_scores_not_nan():
    z, _ = _data()
    st = RankStats(z.shape[1]).update(z, torch.ones(z.shape[0]))
    for r in ("caa", "fisher", "mi"):
        s = st.score(r)
        assert torch.isfinite(s).all() and (s == 0).all(), r


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_feed_from_encode_pool_matches_the_float64_reference(backend):
    """The pipeline's path for mi/fisher/caa: encode_pool on the backend -> RankStats, vs float64 pooled values."""
    g = torch.Generator().manual_seed(1)
    sae = make_sae(g, 16, 24, "relu")
    x = torch.randn(6, 5, 16, generator=g)
    lengths = torch.tensor([5, 3, 1, 4, 5, 2])
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    xb, saeb = on_backend(backend, x, sae)
    st = make_stats("mi", 24, xb.device)
    st.update(encode_pool(xb, lengths, saeb, "max", backend=backend), y)
    ref = encode_pool_reference(x.double(), lengths, sae, "max")
    caa, fisher, mi = _ref(ref, y)
    torch.testing.assert_close(st.caa().cpu(), caa, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(st.fisher().cpu(), fisher, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(st.mutual_information().cpu(), mi, rtol=1e-5, atol=1e-6)


def test_ranked_features_order_by_the_ranking_and_keep_pearson_r():
    z, y = _data()
    st = RankStats(z.shape[1]).update(z, y)
    for ranking in ("caa", "fisher", "mi"):
        top = ranked_features(st, ranking, k=3)
        scores = [t.score for t in top]
        assert scores == sorted(scores, reverse=True) and top[0].feature == 1, ranking
        assert top[0].r == pytest.approx(float(st.pearson()[1]))
        assert all(st.caa()[t.feature] > 0 for t in top)           # every pick points towards correct answers
    cands = layer_candidates({3: st}, "pearson", k=2)
    assert cands[3][0].score == cands[3][0].r and cands[3][0].layer == 3
    with pytest.raises(TypeError, match="RankStats"):
        ranked_features(CorrStats(z.shape[1]).update(z, y), "mi")
