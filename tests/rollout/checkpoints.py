"""Test checkpoints: the tiny student with perturbed weights, saved untied (or tied, to be refused)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from omniopd.models.loading import load_causal_lm

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json", "generation_config.json")


def save_perturbed(src: str | Path, dst: str | Path, *, seed: int, scale: float = 0.05, tied: bool = False) -> Path:
    """Every weight + scale * N(0, 1) noise; the output layer too. `tied=True` saves it the way
    Qwen3-0.6B/1.7B/4B ship: `tie_word_embeddings: true`, no separate lm_head.weight."""
    model = load_causal_lm(str(src), dtype="float32", device="cpu", trainable=True)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * scale)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    if tied:
        model.config.tie_word_embeddings = True
        model.tie_weights()
    model.save_pretrained(dst, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copy(Path(src) / name, dst / name)
    assert json.loads((dst / "config.json").read_text())["tie_word_embeddings"] is tied
    return dst
