"""Killed runs resume: a run stopped at any generation batch (or while writing its outputs), then run again with the
same settings, ends with byte-identical outputs and redoes at most the batch it was killed in. A kill is an exception
from inside generation: nothing after it runs, as with kill -9 (the pipeline has no cleanup code that could differ).
Stale checkpoints (changed SAE, answers, scale) start the stage fresh and say so; a corrupt one is set aside."""
import pytest
from fakes import FakeTask, tiny_bank

import corrsteer.pipeline.collect
import corrsteer.pipeline.report
import corrsteer.pipeline.runner
from corrsteer.pipeline.run import RunConfig, corrsteer_run
from corrsteer.runtime.checkpoint import MARKER

FILES = ("plan.json", "plans/S.json", "plans/A.json", "plans/P.json", "stats.safetensors", "predictions.jsonl",
         "validation.json", "report.md")
CFG = RunConfig(n_select=12, n_val=6, n_test=8, batch_size=4)


class Killed(BaseException):
    pass


class Counter:
    """Wraps generate_batch in collect and stages: counts calls (with the stage) and dies at call `kill_at`."""

    def __init__(self, monkeypatch, kill_at=None):
        self.calls, self.kill_at = [], kill_at
        for mod in (corrsteer.pipeline.collect, corrsteer.pipeline.runner):
            real = mod.generate_batch
            monkeypatch.setattr(mod, "generate_batch", self.wrap(real, mod.__name__.split(".")[-1]))

    def wrap(self, real, where):
        def fn(*a, **kw):
            self.calls.append(where if "capture" in kw else "plans")
            if self.kill_at is not None and len(self.calls) == self.kill_at:
                raise Killed()
            return real(*a, **kw)
        return fn


def _run(lm, out, cfg=CFG, bank=None, task=None):
    return corrsteer_run(lm, bank or tiny_bank(lm, layers=(0, 2, 3)), task or FakeTask(30), out, cfg,
                         sae_source="random")


def _outputs(out):
    return {name: (out / name).read_bytes() for name in FILES}


@pytest.fixture(scope="module")
def clean(tiny_lm, tmp_path_factory):
    """An uninterrupted run: its outputs and its generation calls."""
    out = tmp_path_factory.mktemp("clean")
    mp = pytest.MonkeyPatch()
    c = Counter(mp)
    _run(tiny_lm, out)
    mp.undo()
    assert not (out / MARKER).exists()
    return _outputs(out), c.calls


def _stage_calls(calls):
    """Call numbers (1-based) of the first and last call of each stage, to kill in each."""
    collect_calls = [i + 1 for i, w in enumerate(calls) if w == "collect"]
    plan_calls = [i + 1 for i, w in enumerate(calls) if w == "plans"]
    return collect_calls, plan_calls


@pytest.mark.parametrize("where", ["collect-first", "collect-last", "validate", "prefix-or-test", "test-last"])
def test_kill_then_rerun_redoes_one_batch_and_matches(tiny_lm, tmp_path, monkeypatch, clean, where):
    want, calls = clean
    col, plan = _stage_calls(calls)
    assert len(col) == 3 and len(plan) >= 3, calls
    kill_at = dict(zip(["collect-first", "collect-last", "validate", "prefix-or-test", "test-last"],
                       [1, col[-1], plan[0], plan[len(plan) // 2], plan[-1]]))[where]
    with pytest.raises(Killed):
        Counter(monkeypatch, kill_at)
        _run(tiny_lm, tmp_path)
    assert (tmp_path / MARKER).exists() and not (tmp_path / "report.md").exists()
    monkeypatch.undo()
    again = Counter(monkeypatch)
    _run(tiny_lm, tmp_path)
    assert len(again.calls) == len(calls) - kill_at + 1          # only the batch it died in is redone
    assert _outputs(tmp_path) == want
    assert not (tmp_path / MARKER).exists()


def test_kill_while_writing_outputs_resumes_without_generating(tiny_lm, tmp_path, monkeypatch, clean):
    def die(*a, **kw):
        raise Killed()
    monkeypatch.setattr(corrsteer.pipeline.report, "write_predictions", die)
    with pytest.raises(Killed):
        _run(tiny_lm, tmp_path)
    assert (tmp_path / MARKER).exists()
    monkeypatch.undo()
    again = Counter(monkeypatch)
    _run(tiny_lm, tmp_path)
    assert again.calls == [] and _outputs(tmp_path) == clean[0]


def test_changed_sae_starts_collection_fresh(tiny_lm, tmp_path, monkeypatch, capsys):
    _run(tiny_lm, tmp_path / "a")
    other = tiny_bank(tiny_lm, layers=(0, 2, 3), seed=1)          # same layers, other weights
    c = Counter(monkeypatch)
    _run(tiny_lm, tmp_path / "a", bank=other)
    err = capsys.readouterr().err
    assert "SAE of layer 0, SAE of layer 2, SAE of layer 3 changed since" in err and "starting collect fresh" in err
    assert c.calls.count("collect") == 3
    _run(tiny_lm, tmp_path / "b", bank=other)
    assert _outputs(tmp_path / "a") == _outputs(tmp_path / "b")


def test_changed_answers_start_collection_fresh(tiny_lm, tmp_path, monkeypatch, capsys):
    _run(tiny_lm, tmp_path / "a")
    task = FakeTask(30)
    for it in task.items:
        it.gold = "odd"                                            # every answer's truth flips
    c = Counter(monkeypatch)
    _run(tiny_lm, tmp_path / "a", task=task)
    assert "collect: classes, items changed since" in capsys.readouterr().err and c.calls.count("collect") == 3
    _run(tiny_lm, tmp_path / "b", task=task)
    assert _outputs(tmp_path / "a") == _outputs(tmp_path / "b")


def test_changed_scale_reuses_collection_and_redoes_the_rest(tiny_lm, tmp_path, monkeypatch, capsys, clean):
    from dataclasses import replace

    out = tmp_path / "a"
    _run(tiny_lm, out)
    assert _outputs(out) == clean[0]
    c = Counter(monkeypatch, kill_at=None)
    scaled = replace(CFG, scale=2.0)
    col, plan = _stage_calls(clean[1])
    c.kill_at = len(plan) - 1              # die during the test stage of the --scale 2 rerun
    with pytest.raises(Killed):
        _run(tiny_lm, out, cfg=scaled)
    err = capsys.readouterr().err
    assert "collect: resuming after batch 3" in err and "starting validate fresh" in err
    assert (out / MARKER).exists()                                 # the directory says it is incomplete
    assert not (out / "report.md").exists() and not (out / "predictions.jsonl").exists()   # no stale outputs
    monkeypatch.undo()
    _run(tiny_lm, out, cfg=scaled)
    _run(tiny_lm, tmp_path / "b", cfg=scaled)
    assert _outputs(out) == _outputs(tmp_path / "b") and _outputs(out) != clean[0]


def test_corrupt_checkpoint_is_named_set_aside_and_redone(tiny_lm, tmp_path, capsys, clean):
    _run(tiny_lm, tmp_path)
    ck = tmp_path / "checkpoints" / "collect.safetensors"
    ck.write_bytes(ck.read_bytes()[:50])                          # truncated
    _run(tiny_lm, tmp_path)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "unreadable" in ln]
    assert len(lines) == 1 and str(ck) in lines[0] and "collect starts over" in lines[0]
    assert (tmp_path / "checkpoints" / "collect.safetensors.corrupt").exists()
    assert _outputs(tmp_path) == clean[0]
