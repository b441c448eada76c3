"""Rankings: the pooled within-class r against a float64 recomputation, a planted case where plain Pearson picks the
class and within-class picks the real feature, the default ranking per task kind, and variant N's negative picks."""

import pytest
import torch

from corrsteer.method.rank import (
    layer_candidates,
    negative_candidates,
    ranked_features,
    resolve_ranking,
    within_class_r,
)
from corrsteer.settings import SettingsError
from corrsteer.tasks.task import Task
from corrsteer_kernels import CorrStats


def _by_class(z, y, cls, n_classes):
    return [CorrStats(z.shape[1]).update(z[cls == c], y[cls == c]) for c in range(n_classes)]


def _reference_r_w(z, y, cls, n_classes):
    """float64 by hand: centre z and y within each class; classes with constant y add nothing to cov or var_y."""
    z, y = z.double(), y.double()
    cov = torch.zeros(z.shape[1], dtype=torch.float64)
    var_z = torch.zeros(z.shape[1], dtype=torch.float64)
    var_y = 0.0
    for c in range(n_classes):
        zc, yc = z[cls == c] - z[cls == c].mean(0), y[cls == c] - y[cls == c].mean()
        var_z += (zc * zc).sum(0)
        if bool((y[cls == c] != y[cls == c][0]).any()):
            cov += (zc * yc[:, None]).sum(0)
            var_y += float((yc * yc).sum())
    return cov / torch.sqrt(var_z * var_y)


def test_within_class_r_equals_float64_reference():
    seed = int(torch.randint(1 << 30, (1,)))
    g = torch.Generator().manual_seed(seed)
    n, F = 90, 12
    cls = torch.randint(0, 3, (n,), generator=g)
    cls[:3] = torch.tensor([0, 1, 2])
    y = (torch.rand(n, generator=g) < 0.3 + 0.2 * cls).double()
    y[cls == 2] = 1.0                                        # a class where the model is always right
    z = torch.rand(n, F, generator=g) * 3 + y[:, None] * torch.rand(F, generator=g)
    got = within_class_r(_by_class(z, y, cls, 3))
    torch.testing.assert_close(got, _reference_r_w(z, y, cls, 3), rtol=1e-9, atol=1e-12)
    # one class alone is plain Pearson r
    torch.testing.assert_close(within_class_r([CorrStats(F).update(z, y)]), CorrStats(F).update(z, y).pearson())


def _planted(n_per_class=200):
    """Feature 0 = the class (the model is right on 80% of class 1, 20% of class 0); feature 1 predicts being right
    within each class; feature 2 is noise."""
    g = torch.Generator().manual_seed(0)
    cls = torch.arange(2 * n_per_class) % 2
    y = torch.zeros(2 * n_per_class, dtype=torch.float64)
    for c, share in ((0, 0.2), (1, 0.8)):
        idx = (cls == c).nonzero().squeeze(1)
        y[idx[:int(share * n_per_class)]] = 1.0
    z = torch.stack([cls.double() + 0.01 * torch.rand(len(y), generator=g, dtype=torch.float64),
                     3.0 + y + 1.15 * torch.randn(len(y), generator=g, dtype=torch.float64),
                     torch.rand(len(y), generator=g, dtype=torch.float64)], 1)
    return z, y, cls


def test_pearson_picks_the_class_feature_within_class_picks_the_real_one():
    z, y, cls = _planted()
    stats = CorrStats(3).update(z, y)
    by_class = _by_class(z, y, cls, 2)
    plain = ranked_features(stats, "pearson", k=3)
    within = ranked_features(stats, "within-class", k=3, by_class=by_class)
    assert plain[0].feature == 0 and plain[0].r > plain[1].r + 0.1
    assert within[0].feature == 1 and within[0].score > 0.2
    assert abs(float(within_class_r(by_class)[0])) < 0.1
    assert within[0].r == pytest.approx(float(stats.pearson()[1]))       # r stays plain Pearson r for the report
    assert within[0].coef == pytest.approx(float(stats.mean_given_positive()[1]))
    cands = layer_candidates({4: stats}, "within-class", by_class={4: by_class})
    assert cands[4][0].feature == 1


@pytest.mark.parametrize("kind,want", [("label", "within-class"), ("mc", "within-class"), ("refusal", "within-class"),
                                       ("short", "pearson"), ("number", "pearson")])
def test_default_ranking_per_task_kind(kind, want):
    task = Task(name="t", kind=kind, items=[], max_new_tokens=8)
    assert task.has_classes == (want == "within-class")
    assert resolve_ranking("auto", task) == want
    assert resolve_ranking("pearson", task) == "pearson" and resolve_ranking("mi", task) == "mi"


def test_within_class_on_a_free_form_task_is_a_usage_error():
    with pytest.raises(SettingsError, match="--ranking within-class needs a task"):
        resolve_ranking("within-class", Task(name="t", kind="short", items=[], max_new_tokens=8))


@pytest.mark.parametrize("ranking", ["pearson", "within-class"])
def test_negative_candidates_steer_away_from_the_most_negative_feature(ranking):
    z, y, cls = _planted()
    z = torch.cat([z, (2.0 - y + 0.5 * torch.rand(len(y), dtype=torch.float64,
                                                  generator=torch.Generator().manual_seed(1)))[:, None]], 1)
    stats = CorrStats(4).update(z, y)
    neg = negative_candidates({7: stats}, [7], ranking, scale=2.0, by_class={7: _by_class(z, y, cls, 2)})
    c = neg[7]
    wrong = y == 0
    assert c.feature == 3 and c.score < -0.5 and c.r < 0
    assert c.coef < 0 and c.coef == pytest.approx(-2.0 * float(z[wrong, 3].mean()))


def test_no_negative_feature_no_candidate():
    y = torch.tensor([1.0, 0.0, 1.0, 0.0])
    z = torch.stack([y + 1.0, 2 * y + 0.5], 1)
    assert negative_candidates({0: CorrStats(2).update(z, y)}, [0]) == {}
