"""The built-in instruction set: broad, seeded, kept apart from the built-in tasks; answers generated once."""
from corrsteer.sae import chat_corpus as C


def test_instructions_are_broad_seeded_and_apart_from_every_task_item():
    a = C.instructions()
    assert len(a) >= 1500 and len(set(a)) == len(a)
    assert C.instructions() == a and C.instructions(seed=1) != a                 # a function of the seed
    assert len(C.instructions(500)) == 500
    taken = C.task_prompts()
    assert not [p for p in a if C._norm(p) in taken]
    assert sum(len(v) for v in C.TOPICS.values()) >= 150
    # task-like formats are there (letter choice, one-word labels), with our own content
    assert any(p.startswith("Question: ") and p.endswith("Answer with the letter of the correct option.") for p in a)
    assert any("Answer with one word." in p for p in a)
    held_out = [p for p, _ in C.task_eval_prompts(per_task=5)]
    assert len(held_out) == 25 and all(C._norm(p) in taken for p in held_out)


def test_answers_are_generated_once_and_resume(tiny_lm, tmp_path, monkeypatch):
    prompts = C.instructions(7)
    first = C.answers(tiny_lm, prompts, 4, batch_size=3, cache_dir=tmp_path, progress=False)
    assert len(first) == 7 and all(isinstance(a, str) for a in first)
    (path,) = tmp_path.glob("*.jsonl")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:1]) + "\n{\"answers\": [[5, \"cut")            # an interrupted run
    calls = []
    real = C.generate_batch

    def counting(lm, ps, *a, **kw):
        calls.append(len(ps))
        return real(lm, ps, *a, **kw)
    monkeypatch.setattr(C, "generate_batch", counting)
    assert C.answers(tiny_lm, prompts, 4, batch_size=3, cache_dir=tmp_path, progress=False) == first
    assert calls == [3, 1]                       # the two batches that were not done
    assert C.answers(tiny_lm, prompts, 4, batch_size=3, cache_dir=tmp_path, progress=False) == first
    assert calls == [3, 1]                       # all cached now
