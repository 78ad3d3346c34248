"""A local causal LM plugs into the emulator as a generator (the tiny-model path)."""

from __future__ import annotations

import pytest

from omniopd.teachers.tokens import count_tokens
from tests.teachers.conftest import call, make_client, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A random-weight 2-layer Qwen3-architecture model with a word-level tokenizer, built offline."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    path = tmp_path_factory.mktemp("tiny")
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    words = ["the", "answer", "is", "one", "two", "three", "four", "five", "plus", "equals", "so"]
    tok.train_from_iterator([" ".join(words)] * 10, trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=fast.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, tie_word_embeddings=False,
        eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
    )
    Qwen3ForCausalLM(config).save_pretrained(path)
    return str(path)


def test_transformers_generator_serves_continuations(emulator, tiny_model_dir):
    from omniopd.teachers.emulator import transformers_model

    emu = emulator("openai_compat", generator=transformers_model(tiny_model_dir))
    result = run(call(make_client("openai_compat", emu.url, mode="prefill"), prompt="one plus one", prefix="the answer is", n=3, max_new_tokens=4, seed=1))
    assert len(result.texts) == 3
    assert all(0 < len(t.split()) <= 4 for t in result.texts)
    assert result.usage.output == sum(count_tokens(t) for t in result.texts)
