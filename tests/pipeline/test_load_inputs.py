"""Input checks against the loaded model: layers that exist, tokens to generate and each prompt within the context."""
from types import SimpleNamespace

import pytest

from corrsteer.pipeline.load import check_context, check_layers, check_max_new_tokens
from corrsteer.settings import SettingsError


def _lm(context=32):
    tok = lambda text, add_special_tokens=False: {"input_ids": text.split()}          # noqa: E731  one word a token
    return SimpleNamespace(name="m", n_layers=4, context_length=context, tokenizer=tok,
                           format=lambda prompt, chat=None: prompt)


def test_layers_must_exist():
    check_layers(_lm(), [0, 3], "0,3")
    check_layers(_lm(), None, None)
    with pytest.raises(SettingsError, match=r"^--layers 2-5: m has no layer 4-5, expected layers of m \(0-3\)$"):
        check_layers(_lm(), [2, 3, 4, 5], "2-5")


def test_tokens_to_generate_fit_the_context():
    check_max_new_tokens(_lm(), 31)
    with pytest.raises(SettingsError, match=r"^--max-new-tokens 32 does not fit m's context of 32 tokens"):
        check_max_new_tokens(_lm(), 32)
    check_max_new_tokens(_lm(context=None), 10**6)                 # a model that does not say: nothing to check


def test_the_first_prompt_too_long_is_named():
    prompts = [("item a", "w " * 20), ("item b", "w " * 25), ("item c", "w " * 30)]
    check_context(_lm(), prompts[:1], 12)
    with pytest.raises(SettingsError, match=r"^item b is 25 tokens long, \+ 8 to generate > m's context of 32 tokens, "
                                            r"expected a prompt of at most 24 tokens$"):
        check_context(_lm(), prompts, 8)
