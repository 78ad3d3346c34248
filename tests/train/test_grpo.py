"""GRPO in the learner step (omniopd/objectives/grpo.py) on the tiny model."""

from __future__ import annotations

import pytest
import torch

from omniopd.algo.sliced import token_stats
from omniopd.objectives import GRPO
from omniopd.objectives.collate import collate
from omniopd.objectives.examples import RewardGroup
from omniopd.train import Trainer, TrainExample, build_trainer
from omniopd.train.step import accumulate_gradients, build_rows
from tests.train.conftest import make_config


def grpo_config(model_dir: str, **sections):
    base = {
        "loss": {"method": "grpo", "beta": 0.0, "normalisation": "sequence"},
        "reward": {"grader": "demo"},
        "rollout": {"samples_per_prompt": 2},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return make_config(model_dir, **base)


def current_logprobs(trainer: Trainer, examples: list[TrainExample]) -> list[list[float]]:
    """log pi_theta of each example's completion under the trainer's current weights."""
    rows = [r for ex in examples for r in GRPO().rows(ex, None)]
    batch = collate(rows, pad_id=0)
    with torch.no_grad():
        lp = token_stats(trainer.models.student_states(batch, autocast=None), batch.targets, batch.response_mask()).logprobs
    return [lp[b, o : o + n].tolist() for b, (o, n) in enumerate(zip(batch.response_offsets, batch.response_lengths,
                                                                    strict=True))]


def grouped_examples(rewards: list[list[float]], *, seed: int = 0) -> list[TrainExample]:
    """One group per inner list, one example per reward; sampled log-probabilities -2.5 (filled
    in on-policy by `on_policy`)."""
    gen = torch.Generator().manual_seed(seed)
    out, key = [], 0
    for group in rewards:
        prompt = torch.randint(10, 1000, (4,), generator=gen).tolist()
        for i in range(len(group)):
            completion = torch.randint(10, 1000, (10 + 3 * i,), generator=gen).tolist()
            out.append(TrainExample(key, prompt, completion, sampled_logprobs=[-2.5] * len(completion),
                                    group=RewardGroup(tuple(group), i)))
            key += 1
    return out


def on_policy(trainer: Trainer, examples: list[TrainExample]) -> list[TrainExample]:
    from dataclasses import replace

    return [replace(ex, sampled_logprobs=lp) for ex, lp in zip(examples, current_logprobs(trainer, examples),
                                                                strict=True)]


def test_grpo_raises_the_likelihood_of_rewarded_samples_and_lowers_the_others(tiny_model_dir):
    trainer = build_trainer(grpo_config(tiny_model_dir))
    examples = on_policy(trainer, grouped_examples([[1.0, 0.0], [0.0, 1.0]]))
    before = [sum(lp) for lp in current_logprobs(trainer, examples)]
    for _ in range(3):
        trainer.step(on_policy(trainer, examples))
    after = [sum(lp) for lp in current_logprobs(trainer, examples)]
    rewarded = [0, 3]
    for k in range(4):
        assert (after[k] > before[k]) == (k in rewarded), (before, after)


def test_on_policy_step_has_unit_ratio_and_counts_groups_and_all_equal_groups(tiny_model_dir):
    trainer = build_trainer(grpo_config(tiny_model_dir))
    examples = on_policy(trainer, grouped_examples([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    m = trainer.step(examples)
    assert m.method == "grpo" and m.examples == 6 and m.kl is None
    assert m.parts["groups"] == 3 and m.parts["groups_all_equal"] == 2  # counted, not dropped
    assert m.parts["samples"] == 6 and m.parts["reward_mean"] == pytest.approx(3 / 6)
    assert m.parts["ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert m.parts["clip_low_fraction"] == 0.0 and m.parts["clip_high_fraction"] == 0.0
    # Only the first group has advantages (+-1); sequence normalisation: the mean over 6 rows
    # of each row's mean surrogate A * ratio = (1 - 1) / 6 = 0 at ratio 1.
    assert m.parts["abs_advantage_mean"] == pytest.approx(2 / 6, abs=1e-5)
    assert m.loss == pytest.approx(0.0, abs=1e-6) and m.grad_norm > 0


def test_a_batch_of_all_equal_groups_has_no_gradient_without_a_kl(tiny_model_dir):
    trainer = build_trainer(grpo_config(tiny_model_dir))
    examples = on_policy(trainer, grouped_examples([[1.0, 1.0], [0.0, 0.0]]))
    m = trainer.step(examples)
    assert m.parts["groups_all_equal"] == 2 and m.grad_norm == 0.0 and m.loss == 0.0


@pytest.mark.parametrize(("shift", "clipped"), [(-1.0, "clip_high_fraction"), (1.0, "clip_low_fraction")])
def test_off_policy_ratios_are_clipped_at_the_bound_the_advantage_points_to(tiny_model_dir, shift, clipped):
    from dataclasses import replace

    trainer = build_trainer(grpo_config(tiny_model_dir))
    examples = on_policy(trainer, grouped_examples([[1.0, 0.0]]))  # 10 and 13 tokens
    # pi_old = pi_theta * e^shift: ratio e (> 1.2) or 1/e (< 0.8) on every token.
    examples = [replace(ex, sampled_logprobs=[lp + shift for lp in ex.sampled_logprobs]) for ex in examples]
    m = trainer.step(examples)
    assert m.parts["ratio_mean"] == pytest.approx(torch.e ** -shift, rel=1e-4)
    # ratio > 1 + eps clips the rewarded sample (A > 0); ratio < 1 - eps the other (A < 0).
    assert m.parts[clipped] == pytest.approx((10 if shift < 0 else 13) / 23)
    other = "clip_low_fraction" if clipped == "clip_high_fraction" else "clip_high_fraction"
    assert m.parts[other] == 0.0


def test_kl_to_the_reference_is_loaded_only_with_beta(tiny_model_dir):
    no_ref = build_trainer(grpo_config(tiny_model_dir))
    assert not no_ref.models.reference_needed
    trainer = build_trainer(grpo_config(tiny_model_dir, loss={"beta": 0.04}))
    examples = on_policy(trainer, grouped_examples([[1.0, 0.0]]))
    first = trainer.step(examples)
    assert first.kl == pytest.approx(0.0, abs=1e-6)  # student == reference before the first update
    second = trainer.step(on_policy(trainer, examples))
    assert second.kl > 0 and second.parts["kl_term"] > 0


@pytest.mark.parametrize("normalisation", ["sequence", "token"])
def test_grpo_gradient_accumulation_equals_the_full_batch(tiny_model_dir, normalisation):
    trainer = build_trainer(grpo_config(tiny_model_dir, loss={"normalisation": normalisation, "beta": 0.05}))
    examples = grouped_examples([[1.0, 0.0], [0.0, 1.0]])
    trainer.step(on_policy(trainer, examples))

    def grads(parts: int) -> dict[str, torch.Tensor]:
        s = trainer.settings
        trainer.optimizer.zero_grad(set_to_none=True)
        micro = build_rows(trainer.objective, examples, trainer.models.tokenizer, parts)
        accumulate_gradients(trainer.objective, trainer.models, micro, s.loss, s.normalisation)
        return {n: p.grad.clone() for n, p in trainer.models.student.named_parameters() if p.grad is not None}

    full = grads(1)
    for parts in (2, 4):  # a group split across micro-batches keeps its advantages
        for name, g in grads(parts).items():
            torch.testing.assert_close(g, full[name], atol=1e-6, rtol=1e-4, msg=name)


def test_an_example_without_its_group_or_sampled_logprobs_is_refused(tiny_model_dir):
    bare = TrainExample(1, [5, 6], [7, 8, 9])
    with pytest.raises(ValueError, match="reward group"):
        GRPO().rows(bare, None)
