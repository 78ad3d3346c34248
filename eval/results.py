"""Typed records of an evaluation: one verdict per graded sample, one score per benchmark.

These are the records that cross boundaries: graders return `Verdict`s, the evaluation
loop wraps them into `SampleResult`s (what the SQL store persists as `eval_results`
rows, and what the JSONL sample logs hold), and `eval.passk.score_benchmark` reduces a
benchmark's samples to a `BenchmarkScore` (what tables, JSON and `eval_runs` hold).

Reason vocabulary (`Verdict.reason`): a short snake_case code, optionally followed by
": detail". Math uses `correct`, `wrong`, `no_answer`, `timeout`, `grader_error: ...`.
Code graders use `pass`, `wrong_answer: test 3`, `time_limit: test 1`, ... so that
`reason.split(":")[0]` groups failures across benchmarks.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """A grader's decision on one response.

    Invariant: `correct` is True exactly when `reason` is `correct` (math) or `pass`
    (code); `seconds` is the wall time the grading took (for a timeout: the limit);
    `score` is in [0, 1] and 1.0 exactly when `correct`.
    """

    correct: bool
    reason: str
    extracted: str | None
    seconds: float
    score: float | None = None
    """Partial credit for the store's `score` column (code: fraction of tests passed,
    in order until the first failure); None means 1.0 if correct else 0.0."""
    detail: str = ""
    """Free text for a reader (code: the judge's message, compiler output or stderr tail)."""


@dataclass(frozen=True)
class SampleResult:
    """One graded sample: the k-th response of a model to one benchmark item.

    Invariants: `0 <= sample_index < k` of its run; (benchmark, item_id, sample_index)
    is unique within an evaluation run; `correct`/`reason`/`extracted`/`grading_s` are
    the fields of the `Verdict` it was graded with.
    """

    benchmark: str
    item_id: str
    sample_index: int
    seed: int | None
    response: str
    extracted: str | None
    correct: bool
    reason: str
    grading_s: float
    finish_reason: str | None = None
    """Why generation stopped (`stop`, `length`), when the backend reports it."""
    completion_tokens: int | None = None
    """Generated tokens, when the backend reports them."""
    score: float | None = None
    """The verdict's partial credit (see Verdict.score)."""
    detail: str = ""
    """The verdict's free-text detail."""

    @classmethod
    def from_verdict(
        cls,
        verdict: Verdict,
        *,
        benchmark: str,
        item_id: str,
        sample_index: int,
        seed: int | None,
        response: str,
        finish_reason: str | None = None,
        completion_tokens: int | None = None,
    ) -> SampleResult:
        return cls(
            benchmark=benchmark,
            item_id=item_id,
            sample_index=sample_index,
            seed=seed,
            response=response,
            extracted=verdict.extracted,
            correct=verdict.correct,
            reason=verdict.reason,
            grading_s=verdict.seconds,
            finish_reason=finish_reason,
            completion_tokens=completion_tokens,
            score=verdict.score,
            detail=verdict.detail,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> SampleResult:
        return cls(**row)


@dataclass(frozen=True)
class ItemScore:
    """Correct samples `c` out of `n` for one item (0 <= c <= n, n >= 1)."""

    item_id: str
    n: int
    c: int


@dataclass(frozen=True)
class BenchmarkScore:
    """Pass@1 of one model on one benchmark, with its bootstrap interval.

    Invariants: `pass_at_1` is the mean over `items` of c/n (Pass@1 averaged over the k
    samples, as in the paper's Tables 1-2), `ci_low <= pass_at_1 <= ci_high`, and
    `pass_at_k[k]` is the unbiased estimator averaged over items (only for k <= min n).
    All rates are fractions in [0, 1]; tables print them as percentages.
    """

    benchmark: str
    n_items: int
    samples_per_item: int
    pass_at_1: float
    ci_low: float
    ci_high: float
    confidence: float
    pass_at_k: dict[int, float]
    items: tuple[ItemScore, ...] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["pass_at_k"] = {str(k): v for k, v in self.pass_at_k.items()}
        return out

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> BenchmarkScore:
        row = dict(row)
        row["pass_at_k"] = {int(k): float(v) for k, v in row["pass_at_k"].items()}
        row["items"] = tuple(ItemScore(**it) for it in row["items"])
        return cls(**row)


def sample_seed(base_seed: int, item_id: str, sample_index: int) -> int:
    """The sampling seed of sample `sample_index` of item `item_id` (a 31-bit int).

    Derived by hashing, so the k samples of an item differ, every item gets its own
    stream, and a rerun (or lm-eval through `omniopd-completions`) sends the same seeds.
    """
    digest = hashlib.blake2b(f"{base_seed}\x00{item_id}\x00{sample_index}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & 0x7FFFFFFF
