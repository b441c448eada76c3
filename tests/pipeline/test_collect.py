"""Collection: the streamed statistics equal a float64 recomputation, and a checkpoint resumes."""
import torch
from fakes import FakeTask, tiny_bank

from corrsteer.model.generate import generate_batch
from corrsteer.pipeline.collect import collect
from corrsteer_kernels import CorrStats, encode_pool_reference


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
