"""Vectors from elsewhere become plans: an exported control vector / lm-eval file imports back to the same
steering, steering-vectors data lands on the decoder layers' outputs, and bad files give one-line errors."""
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from export_plans import assert_same, feature_plan, logits, random_plan

from corrsteer.cli import main as cli
from corrsteer.export import gguf, lm_eval
from corrsteer.export.importers import import_plan
from corrsteer.model.steer import SteeringPlan, load_plan
from corrsteer.settings import SettingsError


@pytest.mark.parametrize("module, suffix, source", [(gguf, ".gguf", "auto"), (lm_eval, ".pt", "lm-eval"),
                                                 (lm_eval, ".pt", "auto")])   # auto: a .pt read by its keys
def test_export_then_import_steers_the_same(tiny_lm, tmp_path, module, suffix, source):
    plan = random_plan(tiny_lm, ["blocks.1.hook_resid_post", "blocks.3.hook_resid_pre", "blocks.3.hook_resid_post"])
    path, = module.write(plan, tmp_path / f"v{suffix}")
    back = import_plan(path, source, model=None if suffix == ".gguf" else tiny_lm.name)
    assert back.model == tiny_lm.name and back.all_positions and back.sae_source.startswith("imported:")
    assert sorted(back.vectors) == ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post", "blocks.3.hook_resid_post"]
    np.testing.assert_array_equal(back.vectors["blocks.2.hook_resid_post"],
                                  np.float32(plan.vectors["blocks.3.hook_resid_pre"]))
    ids = torch.randint(0, 500, (2, 5))
    assert_same(logits(tiny_lm, ids, back), logits(tiny_lm, ids, plan), logits(tiny_lm, ids))


def test_steering_vectors_data_and_cli(tiny_lm, tmp_path):
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    acts = {0: torch.randn(tiny_lm.d_model, generator=g), 2: torch.randn(tiny_lm.d_model, generator=g)}
    torch.save({"layer_activations": acts, "layer_type": "decoder_block"}, tmp_path / "sv.pt")
    out = tmp_path / "plans" / "sv.json"
    assert cli.main(["import", str(tmp_path / "sv.pt"), "--model", tiny_lm.name, "--scale", "-2",
                     "--out", str(out)]) == 0
    plan = load_plan(str(out))
    assert plan.name == "sv" and [e.layer for e in plan.entries] == [0, 2]
    for L, v in acts.items():
        np.testing.assert_allclose(plan.vectors[f"blocks.{L}.hook_resid_post"], -2 * v.numpy(), rtol=1e-6)
    torch.save(acts, tmp_path / "plain.pt")            # sv.layer_activations saved on its own
    assert sorted(import_plan(tmp_path / "plain.pt", model="m").vectors) == sorted(plan.vectors)


def test_steering_vectors_import_steers_like_steering_vectors(tiny_lm, tmp_path):
    """SteeringVector.apply reimplemented (steering-vectors/steering-vectors steering_vector.py): a forward hook on
    model.layers.{num} (the "decoder_block" guess) adds multiplier * layer_activations[num] at every position."""
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    acts = {L: 3 * torch.randn(tiny_lm.d_model, generator=g) / tiny_lm.d_model ** 0.5 for L in (0, 2)}
    torch.save({"layer_activations": acts, "layer_type": "decoder_block"}, tmp_path / "sv.pt")
    plan = import_plan(tmp_path / "sv.pt", model=tiny_lm.name, scale=1.5)
    modules = dict(tiny_lm.model.named_modules())

    def hook(v):
        def fn(_m, _inputs, outputs):
            t = outputs[0] if isinstance(outputs, tuple) else outputs
            t[None] = t + 1.5 * v
            return outputs
        return fn

    @contextmanager
    def sv_apply():
        handles = [modules[f"model.layers.{L}"].register_forward_hook(hook(v)) for L, v in acts.items()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
    ids = torch.randint(0, 500, (2, 5))
    assert_same(logits(tiny_lm, ids, plan), logits(tiny_lm, ids, hooks_fn=sv_apply), logits(tiny_lm, ids))


def test_an_imported_plan_evaluates(tiny_lm, tmp_path):
    """The imported plan is a plan `corrsteer eval` loads: SteeringPlan round trip and hook vectors."""
    path, = gguf.write(feature_plan(tiny_lm), tmp_path / "v.gguf")
    plan = import_plan(path)
    assert SteeringPlan.load(plan.save(tmp_path / "p.json")) == plan
    assert len(plan.hook_vectors()) == 2


@pytest.mark.parametrize("make, args, words", [
    (lambda p: p.write_bytes(b"not a gguf"), [], "not a GGUF file"),
    (lambda p: torch.save({"layers.1": {"steering_vector": torch.ones(3), "action": "clamp"}}, p),
     ["--source", "lm-eval", "--model", "m"], "expected plain additions"),
    (lambda p: torch.save({"x": torch.ones(3)}, p), ["--model", "m"], "not steering-vectors data"),
    (lambda p: torch.save({1: torch.ones(3)}, p), [], "--model is required"),
    (lambda p: None, [], "no such file"),
    (lambda p: torch.save({1: torch.ones(3)}, p), ["--source", "repeng", "--model", "m"], "unknown vector source"),
])
def test_bad_vector_files_fail_in_one_line(tmp_path, capsys, make, args, words):
    suffix = ".gguf" if words in ("not a GGUF file", "no such file") else ".pt"
    src = tmp_path / f"in{suffix}"
    make(src)
    with pytest.raises(SystemExit) as e:
        cli.main(["import", str(src), "--out", str(tmp_path / "p.json"), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert words in err[-1] and err[-1].startswith("corrsteer: error: "), err


@pytest.mark.parametrize("hint, model", [("llama", None), ("mistral", None), ("", None),
                                         ("tiny-llama", "tiny-llama"),
                                         ("google--gemma-2-2b-it", "google/gemma-2-2b-it"), ("org/m", "org/m")])
def test_a_hint_that_is_only_a_model_type_needs_model(tmp_path, hint, model):
    """repeng and EasySteer write the model type ("llama") as the hint; our exports the plan's model."""
    path = gguf.write_directions(tmp_path / "v.gguf", {1: np.ones(8, np.float32)}, hint)
    if model is None:
        with pytest.raises(SettingsError, match=r"^--model is required: .*, expected --model default, "):
            import_plan(path)
        assert import_plan(path, model="m").model == "m"
    else:
        assert import_plan(path).model == model


def test_the_models_width_and_layers_are_checked_at_import(tiny_lm, tmp_path):
    """With the model's config at hand (a HF directory), a vector of another width or a layer it lacks is refused
    before the plan is written."""
    tiny_lm.model.save_pretrained(tmp_path / "model")
    model = str(tmp_path / "model")
    ok = gguf.write_directions(tmp_path / "ok.gguf", {3: np.ones(tiny_lm.d_model, np.float32)}, "llama")
    assert import_plan(ok, model=model).vectors.keys() == {"blocks.3.hook_resid_post"}
    wide = gguf.write_directions(tmp_path / "w.gguf", {1: np.ones(tiny_lm.d_model + 3, np.float32)}, "llama")
    with pytest.raises(SettingsError, match=rf"the vector of layer 1 is {tiny_lm.d_model + 3} wide, expected .*"
                                            rf"width {tiny_lm.d_model}$"):
        import_plan(wide, model=model)
    deep = gguf.write_directions(tmp_path / "d.gguf", {tiny_lm.n_layers: np.ones(tiny_lm.d_model, np.float32)}, "x")
    with pytest.raises(SettingsError, match=rf"steers layer {tiny_lm.n_layers}, expected a layer of "):
        import_plan(deep, model=model)


def test_mixed_widths_are_refused_even_without_the_model(tmp_path):
    path = gguf.write_directions(tmp_path / "v.gguf", {1: np.ones(8, np.float32)}, "m")
    torch.save({1: torch.ones(8), 2: torch.ones(9)}, tmp_path / "sv.pt")
    assert import_plan(path).vectors
    with pytest.raises(SettingsError, match="is 8 wide but the one at blocks.2.hook_resid_post 9, expected one "):
        import_plan(tmp_path / "sv.pt", model="m")
