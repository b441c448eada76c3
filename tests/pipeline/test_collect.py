"""Collection: the streamed statistics (totals, per class, against shuffled scores) equal a float64 recomputation,
and a checkpoint resumes them."""
import pytest
import torch
from fakes import FakeTask, tiny_bank

from corrsteer.model.generate import generate_batch
from corrsteer.pipeline.collect import collect, task_classes
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
        torch.testing.assert_close(col.sae[L].sums_at(want.shift), want.features, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(col.sae[L].scalars, want.scalars)
    # resume: a rerun with the same settings reads the checkpoint instead of generating again
    again = collect(tiny_lm, bank, task, task.items, batch_size=4, checkpoint=tmp_path / "ck.safetensors",
                    progress=False)
    assert again.rows == col.rows and torch.equal(again.sae[1].features, col.sae[1].features)


class TwoClassTask(FakeTask):
    """FakeTask with golds even / odd alternating: items of both classes, right or wrong by the output's length."""

    def __init__(self, n=12):
        super().__init__(n)
        for i, it in enumerate(self.items):
            it.gold = "even" if i % 2 == 0 else "odd"


def test_per_class_stats_equal_recomputation_and_survive_a_checkpoint(tiny_lm, tmp_path):
    bank = tiny_bank(tiny_lm)
    task = TwoClassTask(10)
    ck = tmp_path / "ck.safetensors"
    col = collect(tiny_lm, bank, task, task.items, batch_size=4, checkpoint=ck, progress=False, ranking="within-class")
    assert col.classes == task_classes(task, task.items) == ["even", "odd"]
    ys = torch.tensor([r["correct"] for r in col.rows], dtype=torch.float64)
    out = generate_batch(tiny_lm, [it.prompt for it in task.items], task.max_new_tokens,
                         capture=[e.hook for _, e in bank])
    for L, e in bank:
        pooled = encode_pool_reference(out.captured[e.hook], out.lengths, e.sae, "max")
        for c, name in enumerate(col.classes):
            rows = torch.tensor([i for i, it in enumerate(task.items) if it.gold == name])
            want = CorrStats(e.sae.d_sae).update(pooled[rows], ys[rows])
            torch.testing.assert_close(col.by_class[L][c].sums_at(want.shift), want.features, rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(col.by_class[L][c].scalars, want.scalars)
        summed = CorrStats(e.sae.d_sae).merge(col.by_class[L][0]).merge(col.by_class[L][1])
        torch.testing.assert_close(summed.sums_at(col.sae[L].shift), col.sae[L].features, rtol=1e-12, atol=1e-9)
    again = collect(tiny_lm, bank, task, task.items, batch_size=4, checkpoint=ck, progress=False,
                    ranking="within-class")
    assert again.rows == col.rows
    for L, _ in bank:
        for a, b in zip(again.by_class[L], col.by_class[L]):
            assert torch.equal(a.features, b.features) and torch.equal(a.scalars, b.scalars)
        assert torch.equal(again.shuffled[L].features, col.shuffled[L].features)
    # another permutation seed: the checkpoint's key differs, so nothing is reused
    # (permutations within class of batches of 4 are few: some seeds draw the same sums; seed 4 does not)
    other = collect(tiny_lm, bank, task, task.items, batch_size=4, checkpoint=ck, progress=False,
                    ranking="within-class", seed=4)
    # the same per-class sums, up to the fp32 partial sums of the groups the permutation forms (torch path)
    want = col.by_class[1][0]
    torch.testing.assert_close(other.by_class[1][0].sums_at(want.shift), want.features, rtol=1e-6, atol=1e-6)
    assert not torch.equal(other.shuffled[1].features, col.shuffled[1].features)
    assert not torch.equal(other.shuffled_by_class[1][0].features, col.shuffled_by_class[1][0].features) or \
        not torch.equal(other.shuffled_by_class[1][1].features, col.shuffled_by_class[1][1].features)


def test_free_form_tasks_have_no_classes():
    task = FakeTask(4)
    task.kind = "short"
    assert task_classes(task, task.items) == []


def _legacy(name: str) -> str:
    """A statistic's checkpoint name as runs before the one naming scheme wrote it."""
    import re
    for new, old in ((r"^shuffled\.class(\d+)\.layer(\d+)\.", r"shuffled_class.\2.\1."),
                     (r"^class(\d+)\.layer(\d+)\.", r"class.\2.\1."), (r"^shuffled\.layer(\d+)\.", r"shuffled.\1."),
                     (r"^raw\.layer(\d+)\.", r"raw.\1."), (r"^layer(\d+)\.", r"sae.\1.")):
        name, n = re.subn(new, old, name)
        if n:
            return name
    return name


def test_a_checkpoint_under_the_older_names_still_resumes(tiny_lm, tmp_path, monkeypatch):
    from safetensors import safe_open
    from safetensors.torch import save_file

    import corrsteer.pipeline.collect as C
    bank, task, ck = tiny_bank(tiny_lm), TwoClassTask(10), tmp_path / "ck.safetensors"
    col = collect(tiny_lm, bank, task, task.items, batch_size=4, checkpoint=ck, progress=False, ranking="within-class")
    with safe_open(str(ck), "pt") as f:
        meta, tensors = f.metadata(), {_legacy(k): f.get_tensor(k) for k in f.keys()}
    assert any(k.startswith("sae.") for k in tensors) and any(k.startswith("shuffled_class.") for k in tensors)
    save_file(tensors, str(ck), metadata=meta)
    monkeypatch.setattr(C, "generate_batch", lambda *a, **kw: pytest.fail("generated again instead of resuming"))
    again = collect(tiny_lm, bank, task, task.items, batch_size=4, checkpoint=ck, progress=False,
                    ranking="within-class")
    assert again.rows == col.rows
    for name, st in C.stat_names(col).items():
        assert torch.equal(C.stat_names(again)[name].features, st.features), name
