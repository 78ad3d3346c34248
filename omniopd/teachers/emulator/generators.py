"""Text generators behind the emulator: any callable
`generate(prompt_text, n, max_tokens, temperature, seed) -> list[str]` (n texts).

`prompt_text` is what a model would see: the raw prompt for completions, or the chat
rendered as `<|role|>\\n...` turns ending with `<|assistant|>\\n` plus any prefill. The
emulator truncates every text to `max_tokens` of its own tokens and applies stop
sequences, so generators need not be exact.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from omniopd.teachers.tokens import tokenize

Generate = Callable[[str, int, int, "float | None", "int | None"], list[str]]

_WORDS = (
    ["the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "was", "on", "be", "by", "this", "are", "from", "at", "or", "an", "which", "we", "so", "then", "sum", "let", "value", "case", "number", "x", "y", "n", "equation", "term", "root", "two", "three", "factor", "therefore", "since", "thus", "find", "solve", "prime", "integer", "answer", "check", "step", "hence", "+", "=", "(", ")", ","]
)


def echo(prompt_text: str, n: int, max_tokens: int, temperature: float | None, seed: int | None) -> list[str]:
    """The last `max_tokens` tokens of the prompt, n times (deterministic, input-dependent)."""
    tail = "".join(tokenize(prompt_text)[-max_tokens:])
    return [tail] * n


def lorem(base_seed: int = 0) -> Generate:
    """Random words, exactly `max_tokens` tokens each, seeded by (seed, prompt, call)."""
    calls = [0]

    def generate(prompt_text: str, n: int, max_tokens: int, temperature: float | None, seed: int | None) -> list[str]:
        calls[0] += 1
        material = f"{base_seed}|{seed}|{calls[0] if seed is None else 0}|{prompt_text[-256:]}"
        rng = random.Random(hashlib.sha256(material.encode()).digest())
        return [" " + " ".join(rng.choice(_WORDS) for _ in range(max_tokens)) for _ in range(n)]

    return generate


def scripted(texts: Sequence[str] | Callable[[str, int], list[str]]) -> Generate:
    """Texts from a list (cycled, one per candidate) or from `fn(prompt_text, n)`."""
    if callable(texts):
        fn = texts

        def generate(prompt_text, n, max_tokens, temperature, seed):
            return list(fn(prompt_text, n))

        return generate
    items = list(texts)
    if not items:
        raise ValueError("a scripted generator needs at least one text")
    position = [0]

    def generate(prompt_text, n, max_tokens, temperature, seed):
        out = []
        for _ in range(n):
            out.append(items[position[0] % len(items)])
            position[0] += 1
        return out

    return generate


def transformers_model(model_dir: str, device: str = "cpu") -> Generate:
    """A local causal LM (e.g. the tiny offline models of `omniopd/models/`) sampling the
    continuation of `prompt_text`. Loaded once; calls are serialised by the caller."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()

    def generate(prompt_text, n, max_tokens, temperature, seed):
        if seed is not None:
            torch.manual_seed(seed)
        ids = tokenizer(prompt_text, return_tensors="pt").input_ids.to(device)  # [1, T]
        sample = temperature is None or temperature > 0
        with torch.no_grad():
            out = model.generate(
                ids.repeat(n, 1),
                max_new_tokens=max_tokens,
                do_sample=sample,
                temperature=temperature if sample and temperature else None,
                # the model's own distribution, as vLLM samples it (transformers' default top_k is 50)
                top_k=0 if sample else None,
                top_p=1.0 if sample else None,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            )  # [n, T + new]
        return tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)

    generate.slow = True  # type: ignore[attr-defined]  # run in a thread, one at a time
    return generate


def from_spec(spec: str, seed: int = 0) -> Generate:
    """echo | lorem | scripted:FILE (a JSON list, else one text per line) | hf:MODEL_DIR |
    py:MODULE:FACTORY (a zero-argument factory returning a generator)."""
    name, _, arg = spec.partition(":")
    if name == "py" and ":" in arg:
        import importlib

        module, _, factory = arg.partition(":")
        return getattr(importlib.import_module(module), factory)()
    if name == "echo":
        return echo
    if name == "lorem":
        return lorem(seed)
    if name == "scripted" and arg:
        raw = Path(arg).read_text()
        try:
            texts = json.loads(raw)
        except ValueError:
            texts = [line for line in raw.splitlines() if line.strip()]
        return scripted(texts)
    if name == "hf" and arg:
        return transformers_model(arg)
    raise ValueError(f"unknown generator {spec!r}: use echo, lorem, scripted:FILE, hf:MODEL_DIR or py:MODULE:FACTORY")
