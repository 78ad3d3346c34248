"""Rule-based rewards for RL objectives (GRPO): the eval harness's graders used in training.

    REWARD_GRADERS = {"demo": DemoReward, "math": MathReward, "code": CodeReward}

A grader scores responses against their problems' references and returns one
`RewardOutcome` per response: a reward in {0, 1}, or a failure with its reason when the
grader itself broke (it raised, or passed `timeout_s`). A wrong, unparseable or
unanswered response is reward 0, never a failure: failure means "we do not know", and
the caller drops that sample (reason `reward_failed`, the reason stored) instead of
training on a guess.

- demo: the quick-start task's checker — the final stated answer (`extract_answer`, the
  rule `omniopd eval` grades the demo benchmark by) compared as an integer with the
  problem's answer. Pure Python, microseconds; a raise is still caught and reported.
- math: `eval.math.MathGrader` (math-verify in a TimeoutPool: a stuck sympy comparison is
  killed at `timeout_s` and reported as a failure, not as wrong).
- code: the sandboxed code grader (`eval.code.GradingPool`, one bubblewrap sandbox per
  sample, `workers` slots); the problem's tests decide. A program that fails a test
  (wrong answer, time or memory limit) is reward 0; a sandbox that cannot run, or a
  grade that takes longer than `timeout_s`, is a failure.

The names are config values (`reward.grader`, omniopd/config.py); a test checks that both
lists agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class RewardReference:
    """What a sample is graded against: its problem's `answer` (demo, math) or `tests` (code)."""

    problem_id: int
    answer: str | None
    tests: Any = None


@dataclass(frozen=True)
class RewardOutcome:
    """One sample's grade. Invariant: exactly one of `reward` and `failure` is None."""

    reward: float | None
    failure: str | None = None
    detail: str = ""  # the grader's reason for the reward (e.g. "wrong", "wrong_answer: test 2")
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if (self.reward is None) == (self.failure is None):
            raise ValueError("a reward outcome has a reward or a failure, not both or neither")


class RewardGrader(Protocol):
    """Grades responses[i] against references[i]; never raises for one bad sample.
    `reference` names the problem field it grades against ("answer" or "tests")."""

    reference: str

    def rewards(self, responses: Sequence[str], references: Sequence[RewardReference]) -> list[RewardOutcome]: ...

    def close(self) -> None: ...


def _missing(ref: RewardReference, what: str) -> RewardOutcome:
    return RewardOutcome(None, f"problem {ref.problem_id} has no {what} to grade against")


class DemoReward:
    """The demo task's checker (module docstring). `check` is the comparison (replaceable in
    tests by one that raises or sleeps, to exercise the failure path)."""

    reference = "answer"  # the problem field it grades against

    def __init__(self, *, timeout_s: float = 20.0, workers: int = 1, check: Callable[[str, str], bool] | None = None):
        self.timeout_s = timeout_s
        self.check = check or demo_correct

    def rewards(self, responses: Sequence[str], references: Sequence[RewardReference]) -> list[RewardOutcome]:
        out = []
        for response, ref in zip(responses, references, strict=True):
            if ref.answer is None:
                out.append(_missing(ref, "answer"))
                continue
            t0 = time.perf_counter()
            try:
                correct = self.check(response, ref.answer)
            except Exception as exc:  # the checker broke: we do not know the reward
                out.append(RewardOutcome(None, f"grader raised {type(exc).__name__}: {exc}"[:500]))
                continue
            seconds = time.perf_counter() - t0
            if seconds > self.timeout_s:  # a pure check cannot be interrupted; late is still failed
                out.append(RewardOutcome(None, f"grader took {seconds:.1f}s > reward.timeout_s = {self.timeout_s}"))
                continue
            out.append(RewardOutcome(float(correct), None, "correct" if correct else "wrong", seconds))
        return out

    def close(self) -> None:
        pass


def demo_correct(response: str, answer: str) -> bool:
    """The final stated answer equals `answer` as an integer (the demo's answers are integers)."""
    from eval.math import extract_answer

    stated = extract_answer(response)
    if stated is None:
        return False
    try:
        return int(stated.strip()) == int(answer.strip())
    except ValueError:
        return False


class MathReward:
    """math-verify through the eval harness's MathGrader (module docstring)."""

    reference = "answer"  # the problem field it grades against

    def __init__(self, *, timeout_s: float = 20.0, workers: int = 1) -> None:
        from eval.math import MathGrader

        self.grader = MathGrader(workers=workers, timeout_s=timeout_s, check=False)

    def rewards(self, responses: Sequence[str], references: Sequence[RewardReference]) -> list[RewardOutcome]:
        out: list[RewardOutcome | None] = [None] * len(responses)
        todo = []
        for i, ref in enumerate(references):
            if ref.answer is None:
                out[i] = _missing(ref, "answer")
            else:
                todo.append(i)
        verdicts = self.grader.grade_answers([references[i].answer for i in todo], [responses[i] for i in todo])
        for i, v in zip(todo, verdicts, strict=True):
            if v.reason == "timeout" or v.reason.startswith("grader_error"):
                out[i] = RewardOutcome(None, f"math grader {v.reason}"[:500], seconds=v.seconds)
            else:
                out[i] = RewardOutcome(float(v.correct), None, v.reason, v.seconds)
        return [o for o in out if o is not None]

    def close(self) -> None:
        self.grader.close()


class CodeReward:
    """The sandboxed code grader and its pool (module docstring)."""

    reference = "tests"  # the problem field it grades against

    def __init__(self, *, timeout_s: float = 60.0, workers: int = 1, allow_unsandboxed: bool = False) -> None:
        from eval.code import GradingPool
        from eval.sandbox import SandboxUnavailable, find_bwrap, sandbox_python

        sandbox_python()  # raises SandboxUnavailable, saying what to install, before any sample is graded
        if find_bwrap() is None and not allow_unsandboxed:
            raise SandboxUnavailable(
                "reward.grader = code runs model-written code, which needs bubblewrap (bwrap); install it "
                "(docs/sandbox.md) or set eval.allow_unsandboxed: true on a machine you can lose"
            )
        self.timeout_s = timeout_s
        self.pool = GradingPool(workers, allow_unsandboxed=allow_unsandboxed)

    def rewards(self, responses: Sequence[str], references: Sequence[RewardReference]) -> list[RewardOutcome]:
        futures: list[Any] = []
        for response, ref in zip(responses, references, strict=True):
            futures.append(None if not ref.tests else self.pool.submit(response, ref.tests))
        out = []
        for ref, future in zip(references, futures, strict=True):
            if future is None:
                out.append(_missing(ref, "tests"))
                continue
            try:
                verdict = future.result(timeout=self.timeout_s)
            except FutureTimeout:
                out.append(RewardOutcome(None, f"code grading took longer than reward.timeout_s = {self.timeout_s}"))
                continue
            except Exception as exc:  # the sandbox could not run the sample
                out.append(RewardOutcome(None, f"code grader raised {type(exc).__name__}: {exc}"[:500]))
                continue
            out.append(RewardOutcome(float(verdict.passed), None, verdict.status, verdict.total_time_s))
        return out

    def close(self) -> None:
        self.pool.close()


REWARD_GRADERS: dict[str, Callable[..., RewardGrader]] = {
    "demo": DemoReward,
    "math": MathReward,
    "code": CodeReward,
}
"""reward.grader -> the grader's factory (keyword options: timeout_s, workers)."""


def make_reward_grader(name: str, **options: Any) -> RewardGrader:
    """REWARD_GRADERS[name](**options)."""
    if name not in REWARD_GRADERS:
        raise ValueError(f"reward.grader {name!r}: expected one of {', '.join(REWARD_GRADERS)}")
    return REWARD_GRADERS[name](**options)


def data_misfit(config: Any) -> str | None:
    """Why the configured grader cannot grade data.train's problems (some lack the field it
    grades against), or None. None also when nothing is graded or data.train is not there
    yet (`omniopd data import` reports unreadable files)."""
    from pathlib import Path

    from db.problem_files import read_problem_file

    grader = config.reward.grader
    if not config.loss.needs.rewards or grader is None or config.data.train is None:
        return None
    if not Path(config.data.train).is_file():
        return None
    field = REWARD_GRADERS[grader].reference
    rows = read_problem_file(config.data.train).rows
    missing = [r for r in rows if not getattr(r, field)]
    if not missing:
        return None
    other = [n for n, g in REWARD_GRADERS.items() if g.reference != field]
    return (f"reward.grader = {grader} grades each problem against its `{field}`, but {len(missing):,} of the "
            f"{len(rows):,} problems of data.train ({config.data.train}) have none (first: id {missing[0].uid!r}); "
            f"set reward.grader to the grader of this dataset ({' or '.join(other)}), or give every problem its `{field}`")


def reward_grader_for(config: Any) -> RewardGrader:
    """The grader a run's config names (`reward.*`; code also reads eval.allow_unsandboxed)."""
    options: dict[str, Any] = {"timeout_s": config.reward.timeout_s, "workers": config.reward.workers}
    if config.reward.grader == "code":
        options["allow_unsandboxed"] = config.eval.allow_unsandboxed
    return make_reward_grader(config.reward.grader, **options)
