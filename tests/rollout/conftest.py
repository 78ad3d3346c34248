"""Fixtures of the rollout tests: one tiny student both backends can run."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def rollout_model_dir(tiny_model_dir) -> str:
    """The tiny untied Qwen3 student; its head_dim of 32 is one vLLM's CPU attention supports."""
    return tiny_model_dir


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread():
    """Tiny models are dominated by per-op overhead: one torch thread is faster than two and
    does not collapse when other processes load the CPUs. Restored after each module."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
