"""Fixtures of the rollout tests: one tiny student both backends can run."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def rollout_model_dir(tmp_path_factory) -> str:
    """The tiny untied Qwen3 student with head_dim 32: vLLM's CPU attention supports head sizes
    32, 64, ... only, and the default tiny model (4 heads of 16) is refused by it."""
    from omniopd.models.tiny import TinySpec, make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("rollout-student"), TinySpec(heads=2, kv_heads=1)))


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread():
    """Tiny models are dominated by per-op overhead: one torch thread is faster than two and
    does not collapse when other processes load the CPUs. Restored after each module."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
