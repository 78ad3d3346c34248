"""The study's oracle: the teacher's exact, length-normalised chunk probability."""

from __future__ import annotations

import math

import pytest
import torch

from omniopd.models.tiny import TinySpec, default_corpus, make_tiny_model
from omniopd.study.oracle import HFOracle, OracleEncodingError, OracleScore, encode_chunk


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    spec = TinySpec(layers=1, hidden_size=32, heads=1, intermediate_size=64, vocab_size=300)
    return make_tiny_model(tmp_path_factory.mktemp("oracle"), spec, default_corpus(lines=200))


def test_oracle_probability_equals_a_direct_forward_of_the_teacher(teacher_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    contexts = ["<|im_start|>user\nCompute 3 + 4.<|im_end|>\n<|im_start|>assistant\n3 + 4 = ",
                "<|im_start|>user\nSolve it.<|im_end|>\n<|im_start|>assistant\nthe answer is"]
    chunks = ["7\nAnswer: 7", " 12 so we add"]
    scores = HFOracle(teacher_dir).score(contexts, chunks)

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    model = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    for context, chunk, score in zip(contexts, chunks, scores, strict=True):
        c_ids = tok(context)["input_ids"]
        u_ids = tok(chunk, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([c_ids + u_ids])).logits[0].double()  # [T, V]
        logp = torch.log_softmax(logits, dim=-1)
        direct = [logp[len(c_ids) + j - 1, u].item() for j, u in enumerate(u_ids)]
        assert len(score.logprobs) == len(u_ids)
        assert score.logprobs == pytest.approx(direct, abs=1e-5)
        assert score.normalised == pytest.approx(math.exp(sum(direct) / len(direct)), rel=1e-5)
        assert score.sequence == pytest.approx(math.exp(sum(direct)), rel=1e-4)
        assert 0 < score.sequence <= score.normalised <= 1


def test_chunk_the_oracle_tokenizer_cannot_encode_is_an_error_naming_it():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["the answer is one two"] * 3, trainers.WordLevelTrainer(special_tokens=["<unk>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    assert encode_chunk(fast, "the answer") == fast("the answer", add_special_tokens=False)["input_ids"]
    with pytest.raises(OracleEncodingError, match=r"chunk 3 'the zebra'.*unknown token"):
        encode_chunk(fast, "the zebra", where="chunk 3")
    with pytest.raises(OracleEncodingError, match="empty"):
        encode_chunk(fast, "")


def test_normalised_probability_is_the_geometric_mean():
    s = OracleScore([math.log(0.5), math.log(0.125)])
    assert s.normalised == pytest.approx(0.25)
    assert s.sequence == pytest.approx(0.0625)


def test_a_server_that_returns_no_prompt_logprobs_is_a_clear_error(teacher_dir):
    """The provider emulator speaks vLLM's wire but scores nothing: the study stops, saying what it needs."""
    from omniopd.study.oracle import OracleRefusedError, ServerOracle
    from omniopd.teachers.emulator import EmulatorConfig, EmulatorThread

    with EmulatorThread(EmulatorConfig(provider="openai_compat", models=["t"])) as emu:
        oracle = ServerOracle(f"{emu.url}/v1", "t", teacher_dir, timeout_s=10)
        with pytest.raises(OracleRefusedError, match=r"returned no prompt log-probabilities for chunk 0 .*HTTP 400"):
            oracle.score(["3 + 4 = "], ["7"])
