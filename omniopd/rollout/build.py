"""Config -> rollout engine: the one place that reads `OmniConfig` for the rollout backends.

Domain code takes plain arguments; this builder turns `student` + `rollout` config
sections into them. `model_path` overrides `student.path` (a worker starting on the
newest published checkpoint instead of the base model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniopd.rollout.base import RolloutEngine

if TYPE_CHECKING:
    from omniopd.config import OmniConfig


def _hf(config: OmniConfig, path: str, max_model_len: int | None, scoring: bool) -> RolloutEngine:
    from omniopd.rollout.hf import HFEngine

    s = config.student
    return HFEngine(path, tokenizer_path=s.tokenizer, dtype=s.dtype, device=s.device)


def _vllm(config: OmniConfig, path: str, max_model_len: int | None, scoring: bool) -> RolloutEngine:
    from omniopd.rollout.vllm import VllmEngine

    s, r = config.student, config.rollout
    return VllmEngine(
        path,
        tokenizer_path=s.tokenizer,
        dtype=s.dtype,
        scoring_device=s.device,
        seed=config.run.seed,
        # Long enough for the longest accepted prompt plus a full completion.
        max_model_len=max_model_len or r.vllm.max_model_len or r.max_prompt_tokens + r.max_new_tokens,
        gpu_memory_utilization=r.vllm.gpu_memory_utilization,
        enforce_eager=r.vllm.enforce_eager,
        tensor_parallel_size=r.vllm.tensor_parallel_size,
        cpu_kvcache_gb=r.vllm.cpu_kvcache_gb,
        max_logprobs=max(20, r.topk),
        scoring=scoring,
    )


ENGINES = {"hf": _hf, "vllm": _vllm}
"""rollout.backend -> builder(config, model_path, max_model_len, scoring)."""


def build_engine(
    config: OmniConfig, model_path: str | None = None, *, max_model_len: int | None = None, scoring: bool = True
) -> RolloutEngine:
    """Start the configured student engine on `model_path` (default `student.path`), version 0.

    `max_model_len` overrides the vLLM context (default: rollout.vllm.max_model_len, else
    rollout.max_prompt_tokens + rollout.max_new_tokens; evaluation with longer generations
    must pass its own). `scoring=False` (vLLM) skips the torch scoring copy of the weights
    for sampling-only use such as evaluation; hf always scores with its one model.
    """
    path = model_path or config.student.path
    if not path:
        raise ValueError("student.path is empty: set it to the student model directory")
    return ENGINES[config.rollout.backend](config, path, max_model_len, scoring)
