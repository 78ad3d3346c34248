"""From a rollout batch's slots to store records: prompts, seeds, generation, chunks (Eq. 7).

`generate_records` is the service the rollout task calls between reading its work and
recording it: it renders one prompt per (problem, epoch, attempt) group of slots, samples
with the engine (`rollout_batch`: generation + exact entropies, Eq. 6), selects each
trajectory's audit chunks with `select_chunks` (Eq. 7; none when the objective declares no
audits) and builds `TrajectoryIn` records. Nothing here touches the store or the broker.

Decisions:
- Seeds: one per group, derive_seed(run seed, problem, epoch, attempt, policy version);
  sample j of the group uses derive_seed(that, j) (the engine's rule). So epochs and
  re-samples of a dropped slot draw new samples, and a redelivered task at the same
  version draws the same ones.
- Uniform placement (ablation) is seeded per trajectory by its slot, so it is reproducible.
- Chunk text: `student_text` is the chunk's tokens decoded without special tokens (what
  phi compares with the teacher); the teacher's prefix is `teacher_context(...)` (the
  completion before the chunk, decoded exactly as produced). `char_start` is where that
  prefix ends in `completion_text`; `prefix_text` is stored only when the two disagree
  (special tokens in the prefix, or a decoding that is not prefix-stable).
- A prompt longer than rollout.max_prompt_tokens yields a `Refusal`; the task records it
  as a dropped trajectory (reason prompt_too_long), so its slot is filled and counted,
  never re-issued forever and never silently skipped.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from db.repo_trajectories import ChunkIn, SlotKey, TrajectoryIn
from omniopd.algo.chunks import select_chunks
from omniopd.config import OmniConfig
from omniopd.rollout import (
    PromptTooLongError,
    RenderedPrompt,
    RolloutEngine,
    RolloutSettings,
    TrajectoryRecord,
    derive_seed,
    render_prompt,
    rollout_batch,
    teacher_context,
)

REFUSED_REASON = "prompt_too_long"


@dataclass(frozen=True)
class Refusal:
    """A slot whose prompt could not be rendered within rollout.max_prompt_tokens."""

    slot: SlotKey
    detail: str


@dataclass(frozen=True)
class GeneratedRecords:
    """Records of one batch. Invariant: every slot asked for is in exactly one of
    `trajectories` (by `slot`) and `refused`."""

    run_id: int
    policy_version: int
    trajectories: list[TrajectoryIn]
    refused: list[Refusal]
    meta: Mapping[str, Any]
    generate_seconds: float = 0.0
    score_seconds: float = 0.0
    completion_tokens: int = 0
    reward_failures: Mapping[SlotKey, str] = dataclasses.field(default_factory=dict)
    """Slots of `trajectories` whose reward could not be computed -> why (workers/rollout/rewards.py)."""

    def refused_records(self) -> list[TrajectoryIn]:
        """Empty trajectories that fill the refused slots (the task drops them at once)."""
        return [
            TrajectoryIn(
                run_id=self.run_id, problem_id=r.slot.problem_id, policy_version=self.policy_version, slot=r.slot,
                prompt_token_ids=[], completion_token_ids=[], logprobs=[], entropies=[], prompt_text="",
                completion_text="", finish_reason="refused", truncated=False, entropy_source="exact", chunks=[],
                meta={**self.meta, "refused": r.detail},
            )
            for r in self.refused
        ]


def chunk_records(
    tokenizer: Any,
    record: TrajectoryRecord,
    question: str,
    config: OmniConfig,
    *,
    rng_seed: int,
) -> list[ChunkIn]:
    """The audited chunks of one trajectory (Eq. 7 on its exact entropies)."""
    ids = record.token_ids
    ch = config.chunking
    # Special tokens (the closing EOS / end-of-turn) are never audited: the teacher answers in
    # text, so a chunk that starts at the end of the answer has no continuation to compare (an
    # empty one, which providers also send as a glitch and the client retries).
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    valid = [t not in special for t in ids]
    selection = select_chunks(record.entropies, ch.m, ch.c, ch.overlap, ch.placement, rng=rng_seed, valid_mask=valid)
    chunks = []
    for (start, end), anchor_entropy in zip(selection.spans, selection.anchor_entropies, strict=True):
        before = tokenizer.decode(ids[:start], skip_special_tokens=True)
        # Prefix-stable decodings (the usual case) make `before` a prefix of the text.
        char_start = len(before) if record.text.startswith(before) else _common_prefix(record.text, before)
        prefix = teacher_context(tokenizer, question, config.data.prompt_template, ids, start).prefix
        chunks.append(
            ChunkIn(
                start=start,
                end=end,
                char_start=char_start,
                student_text=tokenizer.decode(ids[start:end], skip_special_tokens=True),
                anchor_entropy=float(anchor_entropy),
                n_target=config.estimator.n,
                prefix_text=None if prefix == record.text[:char_start] else prefix,
            )
        )
    return chunks


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def generate_records(
    engine: RolloutEngine,
    *,
    run_id: int,
    slots: Sequence[SlotKey],
    questions: Mapping[int, str],
    config: OmniConfig,
    meta: Mapping[str, Any],
) -> GeneratedRecords:
    """Sample every slot of `slots` with the engine's current policy (see module docstring)."""
    groups: dict[tuple[int, int, int], list[int]] = defaultdict(list)  # (problem, epoch, attempt) -> samples
    for slot in slots:
        groups[(slot.problem_id, slot.epoch, slot.attempt)].append(slot.sample_index)
    rendered: list[tuple[tuple[int, int, int], RenderedPrompt]] = []
    refused: list[Refusal] = []
    for key, samples in groups.items():
        try:
            prompt = render_prompt(
                engine.tokenizer, key[0], questions[key[0]], config.data.prompt_template, config.rollout.max_prompt_tokens
            )
        except PromptTooLongError as exc:
            refused += [Refusal(SlotKey(key[0], key[1], s, key[2]), str(exc)) for s in samples]
            continue
        rendered.append((key, prompt))
    version = engine.policy_version
    if not rendered:
        return GeneratedRecords(run_id, version, [], refused, meta)
    seeds = [derive_seed(config.run.seed, p, epoch, attempt, version) for (p, epoch, attempt), _ in rendered]
    # Enough samples per prompt for the highest sample index asked for.
    n = max(config.rollout.samples_per_prompt, *(max(groups[key]) + 1 for key, _ in rendered))
    settings = dataclasses.replace(RolloutSettings.from_config(config), samples_per_prompt=n)
    batch = rollout_batch(engine, [p for _, p in rendered], settings, seeds=seeds)
    audited = config.loss.needs.audits  # no audits (omniopd/objectives): no chunks to select
    out = []
    for i, ((problem_id, epoch, attempt), prompt) in enumerate(rendered):
        question = questions[problem_id]
        teacher_prompt = teacher_context(engine.tokenizer, question, config.data.prompt_template, [], 0).prompt
        for j in sorted(groups[(problem_id, epoch, attempt)]):
            record = batch.trajectories[i * n + j]  # prompt-major: sample j of prompt i
            slot = SlotKey(problem_id, epoch, j, attempt)
            chunks = (
                chunk_records(engine.tokenizer, record, question, config, rng_seed=derive_seed(config.run.seed, "chunks", *slot))
                if audited
                else []
            )
            out.append(
                TrajectoryIn(
                    run_id=run_id, problem_id=problem_id, policy_version=record.policy_version, slot=slot,
                    prompt_token_ids=record.prompt_token_ids, completion_token_ids=record.token_ids,
                    logprobs=record.logprobs, entropies=record.entropies, prompt_text=prompt.text,
                    completion_text=record.text, finish_reason=record.finish_reason, truncated=record.truncated,
                    entropy_source=record.entropy_source, chunks=chunks,
                    meta={**meta, "seed": record.seed, "teacher_prompt": teacher_prompt},
                )
            )
    return GeneratedRecords(
        run_id, version, out, refused, meta, batch.generate_seconds, batch.score_seconds, batch.completion_tokens
    )

