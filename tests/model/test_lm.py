"""Model loading and the residual hooks: a captured activation equals the model's own hidden state at that hook."""
import pytest
import torch
from conftest import tiny_model

from corrsteer.model.hooks import HookPoint, capture, hooked
from corrsteer.model.lm import LM, decoder_layers, load_model, resolve_spec, smollm2_gguf


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2", "gemma3"])
def test_hooks_match_hidden_states_every_family(family):
    model = tiny_model(family)
    layers = decoder_layers(model)
    assert len(layers) == 4
    ids = torch.randint(0, 512, (2, 9), generator=torch.Generator().manual_seed(0))
    points = [HookPoint(L, p) for L in range(4) for p in ("pre", "post")]
    with torch.no_grad(), capture(layers, points) as got:
        hs = model(ids, output_hidden_states=True).hidden_states      # embeddings, then each layer's output
    for L in range(4):
        # resid_pre L = input of layer L = hidden_states[L] (the embeddings for L = 0, scaled as the model does)
        torch.testing.assert_close(got[HookPoint(L, "pre")][0], hs[L])
        if L < 3:   # HF's last hidden state has the final norm applied; resid_post of the last layer does not
            torch.testing.assert_close(got[HookPoint(L, "post")][0], hs[L + 1])
            torch.testing.assert_close(got[HookPoint(L, "post")][0], got[HookPoint(L + 1, "pre")][0])
    assert not torch.allclose(got[HookPoint(3, "post")][0], hs[4])


def test_hook_replacing_the_residual_changes_the_output():
    model = tiny_model("llama")
    layers = decoder_layers(model)
    ids = torch.randint(0, 512, (1, 5))
    with torch.no_grad():
        base = model(ids).logits
        for point in ("pre", "post"):
            with hooked(layers, {HookPoint(1, point): lambda h: h + 1.0}):
                steered = model(ids).logits
            assert not torch.allclose(base, steered)
            with hooked(layers, {HookPoint(1, point): lambda h: None}):   # observing only
                torch.testing.assert_close(model(ids).logits, base)
        torch.testing.assert_close(model(ids).logits, base)               # hooks removed on exit


def test_hook_point_names():
    assert HookPoint.parse("blocks.12.hook_resid_post") == HookPoint(12, "post")
    assert HookPoint.parse("blocks.0.hook_resid_pre").hook_name == "blocks.0.hook_resid_pre"
    for bad in ("blocks.3.hook_mlp_out", "blocks.x.hook_resid_post", "", "layers.3"):
        with pytest.raises(ValueError, match="unsupported hook"):
            HookPoint.parse(bad)
    with pytest.raises(ValueError, match="decoder layers"):
        with hooked(decoder_layers(tiny_model("llama")), {HookPoint(7, "post"): lambda h: None}):
            pass


def test_default_model_loads_offline_and_answers(default_lm):
    lm = default_lm
    assert lm.name == "smollm2-135m-instruct" and lm.n_layers == 30 and lm.d_model == 576
    assert lm.tokenizer.padding_side == "left" and lm.tokenizer.pad_token_id is not None
    prompts = [lm.format("What is the capital of France?"), lm.format("What is the capital of Japan? Answer briefly.")]
    enc = lm.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = lm.model.generate(**enc, max_new_tokens=12, do_sample=False)
    texts = lm.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in texts[0] and "Tokyo" in texts[1], texts


@pytest.mark.slow
def test_gguf_path_loads_the_same_model(default_lm, tmp_path):
    """A GGUF file given by path converts (into a fresh cache) to the same weights as the default."""
    lm = load_model(str(smollm2_gguf()), cache_dir=tmp_path)
    assert lm.name.startswith("SmolLM2-135M-Instruct")
    a = dict(lm.model.named_parameters())
    for name, p in default_lm.model.named_parameters():
        assert torch.equal(a[name], p), name


def test_local_hf_directory_and_errors(tmp_path, default_lm):
    model = tiny_model("qwen2", vocab_size=len(default_lm.tokenizer))
    model.save_pretrained(tmp_path / "tiny")
    default_lm.tokenizer.save_pretrained(tmp_path / "tiny")
    lm = load_model(str(tmp_path / "tiny"))
    assert isinstance(lm, LM) and lm.n_layers == 4 and lm.d_model == 64 and lm.name == "tiny"
    with pytest.raises(FileNotFoundError, match="GGUF"):
        load_model(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(str(tmp_path / "empty"))
    assert resolve_spec("HuggingFaceTB/SmolLM2-135M")[1] == "HuggingFaceTB/SmolLM2-135M"
