"""The first run's memory savings change no number: the bf16 copy of the model is the one deepcopy + .to(bf16) made,
and the trainer's fewer temporaries give the same values and the same SAE."""
from __future__ import annotations

import copy

import pytest
import torch

from corrsteer.config import TrainConfig
from corrsteer.sae.train import TopKTrainer, bf16_copy
from tests.conftest import tiny_model


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_bf16_copy_is_deepcopy_to_bf16(family):
    model = tiny_model(family, seed=3)
    want, got = copy.deepcopy(model).to(torch.bfloat16), bf16_copy(model)
    assert next(model.parameters()).dtype == torch.float32            # the original is left as it was
    for a, b in [(want.state_dict(), got.state_dict()),
                 (dict(want.named_buffers(remove_duplicate=False)), dict(got.named_buffers(remove_duplicate=False)))]:
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert [n for n, _ in want.named_parameters()] == [n for n, _ in got.named_parameters()]   # ties kept
    assert all(p.requires_grad == q.requires_grad for p, q in zip(want.parameters(), got.parameters()))
    ids = torch.randint(0, 512, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(want(ids).logits, got(ids).logits)


def test_normalise_is_the_plain_formula_and_fit_from_raw_is_fit():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1537, 24, generator=g) * 9 + 3
    cfg = TrainConfig(d_sae=64, k=3, epochs=2, batch_size=128, resample_every=5, dead_after=300)
    tr = TopKTrainer(x, cfg)
    assert tr.scale == float((x - x.mean(0)).pow(2).sum(1).mean().sqrt())
    assert torch.equal(tr.normalise(x), (x - tr.mu) / tr.scale)
    kept = x.clone()
    a = TopKTrainer(x, cfg).fit(x, progress=False).weights()
    assert torch.equal(x, kept)                                        # fit leaves its input as it was
    b = TopKTrainer(x.clone(), cfg).fit_from_raw(progress=False).weights()
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
