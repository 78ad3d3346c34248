"""The study's teacher samples: N continuations of every chunk's prefix, through the same
`TeacherClient` as training (rate limiter, retries, the budget guard that reserves and
ledgers every HTTP attempt), so a study against a paid API is paid for and accounted like
a run.

One call of N_max continuations per chunk; an estimate at N < N_max uses the first N of
them (i.i.d. draws, so the first N are a sample of N; the N = 10 and N = 20 rows of the
table share their first ten samples). A chunk whose call fails after the client's retries
stops the study with `StudySamplingError` naming the chunk and the provider's message:
a row is never silently missing.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Callable, Sequence

from omniopd.rollout import derive_seed
from omniopd.study.student_chunks import StudyChunk
from omniopd.teachers.budget import BudgetGuard
from omniopd.teachers.client import TeacherClient
from omniopd.teachers.pricing import Price
from omniopd.teachers.types import TeacherError


class StudySamplingError(RuntimeError):
    """A chunk's teacher call failed (budget, refusal, retries exhausted)."""


async def sample_continuations(
    client: TeacherClient,
    chunks: Sequence[StudyChunk],
    n: int,
    *,
    max_new_tokens_factor: float,
    concurrency: int,
    seed: int,
    make_guard: Callable[[StudyChunk], BudgetGuard | None] = lambda chunk: None,
    price: Price | None = None,
    on_done: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """N continuations of each chunk's prompt + prefix, in chunk order ([K][N] texts)."""
    slots = asyncio.Semaphore(max(1, concurrency))
    done = 0

    async def one(chunk: StudyChunk) -> list[str]:
        nonlocal done
        max_new = max(1, math.ceil(chunk.tokens * max_new_tokens_factor))
        async with slots:
            try:
                result = await client.continue_prefix(
                    chunk.prompt, chunk.prefix, n, max_new, seed=derive_seed(seed, "study-teacher", chunk.index),
                    guard=make_guard(chunk), price=price, call_key=f"study-c{chunk.index}-{uuid.uuid4().hex[:10]}",
                )
            except TeacherError as exc:
                raise StudySamplingError(
                    f"chunk {chunk.index} (problem {chunk.problem_id}): the teacher call failed: {exc}"
                ) from exc
        done += 1
        if on_done is not None:
            on_done(done)
        return list(result.texts)

    tasks = [asyncio.create_task(one(c)) for c in chunks]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
