"""The study's student chunks: sampled by the student exactly as the rollout worker samples
them (the config's prompt template, sampling settings and exact entropies, Eq. 6), chunks
selected by Eq. 7 with the config's M, C, overlap and placement (`chunk_records`, the
rollout worker's own function), and each chunk's prior (Eq. 4) from the student's
log-probabilities of its tokens.

Problems are taken in file order from `data.train`; trajectories are drawn until `count`
chunks exist, then the list is cut at `count` (so a trajectory's last chunks may be left
out, never a chunk in the middle of the list).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from db.problem_files import read_problem_file
from omniopd.algo.estimator import chunk_prior_from_logprobs
from omniopd.config import OmniConfig
from omniopd.rollout import RolloutSettings, derive_seed, render_prompts, rollout_batch
from omniopd.rollout.prompts import user_message
from workers.rollout.records import chunk_records


@dataclass(frozen=True)
class StudyChunk:
    """One student chunk of the study. `prefix` is the student's text before the chunk as the
    teacher sees it (after `prompt` in the teacher's template); `text` the chunk as phi
    compares it; `prior` its Eq. 4 value under the student; `tokens` its student token count."""

    index: int
    problem_id: str
    prompt: str
    prefix: str
    text: str
    prior: float
    tokens: int

    def as_dict(self) -> dict:
        return asdict(self)


def sample_student_chunks(config: OmniConfig, count: int, *, log: Callable[[str], None] = print,
                          progress: Callable[[int], None] | None = None) -> list[StudyChunk]:
    """`count` audited chunks of fresh student trajectories (hf backend, the config's student)."""
    from omniopd.rollout.hf import HFEngine

    problems = read_problem_file(config.data.train)
    if not problems.rows:
        first = "; ".join(str(e) for e in problems.errors[:3])
        raise ValueError(f"data.train {config.data.train} has no valid problems" + (f" ({first})" if first else ""))
    engine = HFEngine(config.student.path, device=config.student.device, max_batch_rows=64)
    settings = RolloutSettings.from_config(config)
    template = config.data.prompt_template
    chunks: list[StudyChunk] = []
    batch_size = max(8, config.rollout.batch_problems)
    position = 0
    while len(chunks) < count:
        if position >= len(problems.rows):
            raise ValueError(
                f"data.train has {len(problems.rows)} problems, which gave {len(chunks)} chunks; fewer than the "
                f"{count} asked for: lower --chunks or raise chunking.m"
            )
        rows = problems.rows[position : position + batch_size]
        position += batch_size
        prompts, _ = render_prompts(engine.tokenizer, [(r.uid, r.prompt) for r in rows], template,
                                    config.rollout.max_prompt_tokens)
        questions = {r.uid: r.prompt for r in rows}
        batch = rollout_batch(engine, prompts, settings)
        for record in batch.trajectories:
            question = questions[record.problem_id]
            seed = derive_seed(config.run.seed, "study", record.problem_id, record.sample_index)
            for chunk in chunk_records(engine.tokenizer, record, question, config, rng_seed=seed):
                if not chunk.student_text:
                    continue  # nothing to compare (special tokens only); never the case for chunk_records' valid mask
                prefix = chunk.prefix_text if chunk.prefix_text is not None else record.text[: chunk.char_start]
                prior = chunk_prior_from_logprobs(record.logprobs[chunk.start : chunk.end])  # Eq. 4
                chunks.append(StudyChunk(len(chunks), str(record.problem_id), user_message(question, template), prefix,
                                         chunk.student_text, prior, chunk.end - chunk.start))
        if progress is not None:
            progress(min(len(chunks), count))
    log(f"{len(chunks[:count])} student chunks from {position} problems")
    return chunks[:count]
