"""lm-evaluation-harness's steered model: the .pt loaded and applied the way lm_eval/models/hf_steered.py does
(reimplemented here from EleutherAI/lm-evaluation-harness; lm_eval itself is not installed) steers the tiny model
exactly as the plan does; with lm-eval installed, its own SteeredModel does too; affected versions are refused."""
from contextlib import contextmanager

import pytest
import torch
from export_plans import assert_same, logits, random_plan

from corrsteer.cli import main as cli
from corrsteer.export import lm_eval as lm_eval_mod
from corrsteer.export.lm_eval import installed_version, version_problem, write


@contextmanager
def hf_steered(model, steer_path):
    """SteeredModel.__init__ + steer(): torch.load the file; for action "add" a forward hook on the module named
    hookpoint in model.base_model.named_modules() replaces its output (or output[0]) with acts + vector * coef."""
    with open(steer_path, "rb") as f:
        config = torch.load(f, weights_only=False)
    fns = {}
    for hookpoint, info in config.items():
        assert info["action"] == "add" and info.get("bias") is None and info.get("head_index") is None
        vec = info["steering_vector"].to(model.dtype) * float(info.get("steering_coefficient", 1.0))
        fns[hookpoint] = lambda acts, vec=vec: acts + vec

    def make(name):
        def hook(module, inp, output):
            if isinstance(output, tuple):
                return (fns[name](output[0]), *output[1:])
            return fns[name](output)
        return hook
    handles = [m.register_forward_hook(make(n)) for n, m in model.base_model.named_modules() if n in fns]
    assert len(handles) == len(fns), "not all hookpoints could be resolved"
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("hooks", [["blocks.0.hook_resid_post", "blocks.3.hook_resid_pre"],
                                   ["blocks.2.hook_resid_post", "blocks.3.hook_resid_pre", "blocks.1.hook_resid_pre"]])
def test_steer_file_applied_like_hf_steered_matches_the_plan(tiny_lm, tmp_path, hooks):
    plan = random_plan(tiny_lm, hooks)
    path, = write(plan, tmp_path / "steer.pt")
    ids = torch.randint(0, 500, (2, 6))
    got = logits(tiny_lm, ids, hooks_fn=lambda: hf_steered(tiny_lm.model, path))
    assert_same(logits(tiny_lm, ids, plan), got, logits(tiny_lm, ids))


def test_embedding_point_and_wrong_suffix_are_refused(tiny_lm, tmp_path, capsys):
    plan = random_plan(tiny_lm, ["blocks.0.hook_resid_pre"]).save(tmp_path / "a.json")
    ok = random_plan(tiny_lm, ["blocks.1.hook_resid_post"]).save(tmp_path / "b.json")
    for argv, words in [([str(plan), "--out", str(tmp_path / "s.pt")], "cannot steer"),
                        ([str(ok), "--out", str(tmp_path / "s.csv")], "expected FILE.pt")]:
        with pytest.raises(SystemExit) as e:
            cli.main(["export", "--format", "lm-eval", *argv])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert words in err[-1] and err[-1].startswith("corrsteer: error: "), err


@pytest.mark.parametrize("version, n_layers, refused", [
    ("0.4.7", 1, "has no steered model"), ("0.4.8", 1, None), ("0.4.8", 2, "adds the last layer's vector"),
    ("0.4.9.1", 3, "adds the last layer's vector"), ("0.4.9.2", 3, None), ("0.4.13", 5, None), (None, 5, None)])
def test_lm_eval_versions_with_the_closure_bug_refuse_several_layers(version, n_layers, refused):
    """0.4.8-0.4.9.1 bind every "add" hook to the loop's last vector (a lambda in a loop, read in their wheels'
    lm_eval/models/hf_steered.py); 0.4.9.2 binds each with functools.partial."""
    problem = version_problem(version, n_layers)
    assert (problem is None) if refused is None else refused in problem


def test_an_affected_lm_eval_installed_here_refuses_a_multi_layer_plan(tiny_lm, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(lm_eval_mod, "installed_version", lambda: "0.4.9.1")
    one = random_plan(tiny_lm, ["blocks.1.hook_resid_post"]).save(tmp_path / "one.json")
    two = random_plan(tiny_lm, ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]).save(tmp_path / "two.json")
    assert cli.main(["export", str(one), "--format", "lm-eval", "--out", str(tmp_path / "one.pt")]) == 0
    assert "for lm-eval >= 0.4.9.2" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["export", str(two), "--format", "lm-eval", "--out", str(tmp_path / "two.pt")])
    assert e.value.code == 2 and not (tmp_path / "two.pt").exists()
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "corrsteer: error: --format lm-eval: lm-eval 0.4.9.1 installed here adds the last layer's vector at every "
        "hookpoint (fixed in 0.4.9.2) and the plan steers 2 layers, expected lm-eval >= 0.4.9.2 (pip install -U "
        "'lm-eval>=0.4.9.2')")


def test_lm_evals_own_steered_model_matches_the_plan(tiny_lm, tmp_path):
    """Where lm-eval is installed: its SteeredModel (lm_eval/models/hf_steered.py) loads the file and steers the
    tiny model (from a HF directory) in its own _model_call; the logits equal the plan's, every position."""
    steered = pytest.importorskip("lm_eval.models.hf_steered")
    if version_problem(installed_version(), 3):
        pytest.skip(f"lm-eval {installed_version()} has the closure bug")
    tiny_lm.model.save_pretrained(tmp_path / "model")
    tiny_lm.tokenizer.save_pretrained(tmp_path / "model")
    plan = random_plan(tiny_lm, ["blocks.0.hook_resid_post", "blocks.2.hook_resid_pre", "blocks.3.hook_resid_post"])
    path, = write(plan, tmp_path / "steer.pt")
    lm = steered.SteeredModel(pretrained=str(tmp_path / "model"), steer_path=str(path), device="cpu",
                              dtype="float32", batch_size=1)
    ids = torch.randint(0, 500, (2, 6))
    with torch.no_grad():
        theirs = lm._model_call(ids).double()
    assert_same(logits(tiny_lm, ids, plan), theirs, logits(tiny_lm, ids))
