"""Learner-step fixtures: the tiny student, configs for it, and a fixed batch of examples."""

from __future__ import annotations

import pytest
import torch

from omniopd.config import OmniConfig, parse_config
from omniopd.train import AuditedChunk, TrainExample


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread(single_torch_thread):
    """Every module here runs tiny models in-process (tests/conftest.py: single_torch_thread)."""


def make_config(model_dir: str, **sections) -> OmniConfig:
    data = {
        "student": {"path": model_dir, "device": "cpu"},
        "learner": {"lr": 1e-3, "batch_size": 4, "max_steps": 50},
        "loss": {"normalisation": "token", "beta": 0.1},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_config(data)


def fixed_examples(count: int = 4, *, seed: int = 0, vocab: int = 1000) -> list[TrainExample]:
    """Examples of different lengths with audited chunks (k_sem of N = 4 continuations)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k in range(count):
        prompt = torch.randint(10, vocab, (3 + k,), generator=gen).tolist()
        completion = torch.randint(10, vocab, (24 + 5 * k,), generator=gen).tolist()
        chunks = (
            AuditedChunk(2, 8, k_sem=float(k % 5), n=4, teacher_texts=("Step 1: 2 + 2 = 4.", "the answer is")),
            AuditedChunk(12, 19, k_sem=1.5, n=4, teacher_texts=("Answer: 4", "so we add")),
        )
        out.append(TrainExample(k, prompt, completion, chunks))
    return out


@pytest.fixture
def examples() -> list[TrainExample]:
    return fixed_examples()
