"""Student rollouts: sampling backends (hf, vllm), exact scoring (Eq. 6), prompts, weight sync.

    engine = build_engine(config)                                  # build.py
    prompts, refused = render_prompts(engine.tokenizer, problems, template, max_prompt_tokens)
    batch = rollout_batch(engine, prompts, RolloutSettings.from_config(config))
    report = load_version(engine, checkpoint_dir, version, tolerance=...)   # weights.py

The vLLM backend is imported only when built (`omniopd.rollout.vllm`), so this package
works without vLLM installed.
"""

from omniopd.rollout.base import Generation, RolloutEngine, Sampling, derive_seed
from omniopd.rollout.build import build_engine
from omniopd.rollout.prompts import (
    TABLE7_TEMPLATE,
    PromptTooLongError,
    RenderedPrompt,
    TeacherContext,
    render_prompt,
    render_prompts,
    teacher_context,
)
from omniopd.rollout.scoring import TokenScores, score_completions
from omniopd.rollout.trajectories import (
    RolloutBatch,
    RolloutSettings,
    TrajectoryRecord,
    build_trajectories,
    rollout_batch,
)
from omniopd.rollout.weights import ReloadReport, WeightSyncError, load_version, verify_probe

__all__ = [
    "TABLE7_TEMPLATE",
    "Generation",
    "PromptTooLongError",
    "ReloadReport",
    "RenderedPrompt",
    "RolloutBatch",
    "RolloutEngine",
    "RolloutSettings",
    "Sampling",
    "TeacherContext",
    "TokenScores",
    "TrajectoryRecord",
    "WeightSyncError",
    "build_engine",
    "build_trajectories",
    "derive_seed",
    "load_version",
    "render_prompt",
    "render_prompts",
    "rollout_batch",
    "score_completions",
    "teacher_context",
    "verify_probe",
]
