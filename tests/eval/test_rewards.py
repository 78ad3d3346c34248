"""Rule-based rewards (eval/rewards.py): right is 1, wrong is 0, a broken grader is a failure
with its reason (never a guessed reward)."""

from __future__ import annotations

import time
from typing import get_args

import pytest

from eval.rewards import (
    REWARD_GRADERS,
    CodeReward,
    DemoReward,
    MathReward,
    RewardOutcome,
    RewardReference,
)
from omniopd.config import RewardConfig


def ref(answer=None, tests=None, pid=7) -> RewardReference:
    return RewardReference(pid, answer, tests)


def test_the_config_offers_exactly_the_registered_graders():
    offered = {a for a in get_args(RewardConfig.model_fields["grader"].annotation) if a is not type(None)}
    assert set(get_args(next(iter(offered)))) == set(REWARD_GRADERS)


def test_demo_reward_reads_the_last_stated_answer():
    out = DemoReward().rewards(
        ["7 + 3 = 10\n10 - 2 = 8\nAnswer: 8", "Answer: 9", "7 + 3 = 10", "Answer: 7\nwait\nAnswer: 8", "Answer: eight"],
        [ref("8")] * 5,
    )
    assert [o.reward for o in out] == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert all(o.failure is None for o in out) and out[1].detail == "wrong"


def test_a_grader_that_raises_or_overruns_fails_the_sample_with_the_reason():
    def broken(response, answer):
        raise ZeroDivisionError("boom")

    def slow(response, answer):
        time.sleep(0.05)
        return True

    [raised] = DemoReward(check=broken).rewards(["Answer: 1"], [ref("1")])
    assert raised.reward is None and raised.failure == "grader raised ZeroDivisionError: boom"
    [late] = DemoReward(check=slow, timeout_s=0.01).rewards(["Answer: 1"], [ref("1")])
    assert late.reward is None and "reward.timeout_s = 0.01" in late.failure
    [missing] = DemoReward().rewards(["Answer: 1"], [ref(None)])
    assert missing.failure == "problem 7 has no answer to grade against"


def test_an_outcome_has_a_reward_or_a_failure():
    with pytest.raises(ValueError):
        RewardOutcome(1.0, "both")
    with pytest.raises(ValueError):
        RewardOutcome(None)


def test_math_reward_is_math_verify_and_a_timeout_is_a_failure():
    with _math(20) as grader:
        out = grader.rewards([r"so \boxed{\frac{1}{2}}", "Answer: 0.5", "Answer: 3", "no answer"],
                             [ref("0.5"), ref(r"\frac12"), ref("4"), ref("4")])
    assert [o.reward for o in out] == [1.0, 1.0, 0.0, 0.0]
    assert out[3].detail == "no_answer"
    with _math(1e-4) as grader:  # no comparison finishes in 0.1 ms: killed and reported, not scored
        [timed_out] = grader.rewards(["Answer: 2^{10}"], [ref("1024")])
    assert timed_out.reward is None and timed_out.failure == "math grader timeout"


class _math:
    def __init__(self, timeout_s: float):
        self.grader = MathReward(workers=1, timeout_s=timeout_s)

    def __enter__(self) -> MathReward:
        return self.grader

    def __exit__(self, *exc) -> None:
        self.grader.close()


def test_code_reward_runs_the_tests_in_the_sandbox_pool():
    tests = [{"input": "2\n", "output": "4\n"}, {"input": "5\n", "output": "10\n"}]
    right = "```python\nprint(int(input()) * 2)\n```"
    wrong = "```python\nprint(int(input()) + 2)\n```"
    grader = CodeReward(workers=2, timeout_s=60)
    try:
        out = grader.rewards([right, wrong, "no code at all", right], [ref(tests=tests)] * 3 + [ref(tests=None)])
    finally:
        grader.close()
    assert [o.reward for o in out[:3]] == [1.0, 0.0, 0.0]
    assert out[1].detail == "wrong_answer" and out[2].detail == "no_code"
    assert out[3].failure == "problem 7 has no tests to grade against"
