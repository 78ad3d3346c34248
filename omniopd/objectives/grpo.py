"""`grpo` (DeepSeekMath Eq. 3 with the KL estimator of Eq. 4, omniopd/algo/grpo.py): the
paper's self-exploratory RL baseline. G samples per prompt, rule-based rewards from a
grader (config `reward.grader`), group-normalised advantages, the clipped surrogate with
the sampling policy's stored log-probabilities as pi_theta_old, and an optional KL to
the reference (loss.beta > 0). No teacher, no audits, no spend.

Normalisation: loss.normalisation `sequence` is Eq. 3 as written (1/|o_i| inside each
sequence, then the mean over the step's sequences); `token` is DAPO's token-level mean;
`sum` sums token terms. The learner claims whole groups (needs.groups) so every example
arrives with its group's rewards (`TrainExample.group`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from omniopd.objectives.base import LossSettings, MicroLoss, Needs, ObjectiveMetrics, Stats, ratio

if TYPE_CHECKING:
    from omniopd.objectives.examples import Row, TrainExample
    from omniopd.train.models import PolicyModels


class GRPO:
    """DeepSeekMath Eq. 3 / Eq. 4: clipped policy gradient on group-normalised rewards."""

    needs: ClassVar[Needs] = Needs(rewards=True, groups=True, kl_anchor=True)

    def rows(self, example: TrainExample, tokenizer) -> list[Row]:
        from omniopd.objectives.examples import Row

        if example.group is None or len(example.sampled_logprobs) != len(example.completion_ids):
            raise ValueError(
                f"example {example.key}: grpo needs the example's reward group and the sampling policy's "
                "log-probabilities (the learner claims groups with rewards: needs.groups)"
            )
        return [Row(example.key, example.prompt_ids, example.completion_ids,
                    sampled_logprobs=example.sampled_logprobs, group=example.group)]

    def micro_loss(self, models: PolicyModels, rows: Sequence[Row], s: LossSettings) -> MicroLoss:
        import torch

        from omniopd.algo.grpo import group_advantages, grpo_loss
        from omniopd.algo.sliced import token_stats
        from omniopd.objectives.collate import collate

        if not rows:
            return MicroLoss(None, Stats(), 0)
        batch = collate(rows, pad_id=s.pad_id, padding=s.padding)
        device = models.device
        mask = batch.response_mask().to(device)  # [B, L] the sampled tokens
        targets = batch.targets.to(device)  # [B, L]
        old = torch.zeros(mask.shape, dtype=torch.float32)  # [B, L] pi_theta_old at the response columns
        for b, (row, offset) in enumerate(zip(rows, batch.response_offsets, strict=True)):
            old[b, offset : offset + len(row.response)] = torch.tensor(row.sampled_logprobs, dtype=torch.float32)
        advantages = torch.tensor(
            [float(group_advantages(torch.tensor(r.group.rewards), scale=s.grpo_scale_rewards)[r.group.index])
             for r in rows], device=device,
        )  # [B]
        slices = {"token_slice": s.token_slice, "vocab_slice": s.vocab_slice}
        logprobs = token_stats(models.student_states(batch, autocast=s.autocast), targets, mask, **slices).logprobs
        ref = None
        if s.beta > 0:
            with torch.no_grad():
                ref = token_stats(models.frozen_states("reference", batch, autocast=s.autocast), targets, mask,
                                  **slices).logprobs
        out = grpo_loss(
            logprobs, old.to(device), advantages, mask, clip_low=s.grpo_clip_low, clip_high=s.grpo_clip_high,
            ref_logprobs=ref, beta=s.beta, length_norm="sequence" if s.normalisation == "sequence" else "token",
        )
        leaders = [r.group for r in rows if r.group.index == 0]  # one member counts its group
        stats = Stats(sums={
            "policy_term": out.policy_term, "kl_term": out.kl_term, "kl_sum": out.kl_sum,
            "ratio_sum": out.ratio_sum, "clipped_low": out.clipped_low, "clipped_high": out.clipped_high,
            "tokens": out.tokens, "samples": len(rows), "reward_sum": sum(r.group.reward for r in rows),
            "abs_advantage_sum": float(advantages.abs().sum()),
            "groups": len(leaders), "groups_all_equal": sum(g.all_equal for g in leaders),
        })
        return MicroLoss(out.loss, stats, batch.forward_tokens)

    def metrics(self, st: Stats, norm: float, beta: float) -> ObjectiveMetrics:
        tokens, samples = st.get("tokens"), st.get("samples")
        parts = {
            "policy_term": st.get("policy_term") / norm,
            "kl_term": st.get("kl_term") / norm,
            "reward_mean": ratio(st.get("reward_sum"), samples),
            "abs_advantage_mean": ratio(st.get("abs_advantage_sum"), samples),
            "ratio_mean": ratio(st.get("ratio_sum"), tokens),
            "clip_low_fraction": ratio(st.get("clipped_low"), tokens),
            "clip_high_fraction": ratio(st.get("clipped_high"), tokens),
            "groups": st.get("groups"),
            "groups_all_equal": st.get("groups_all_equal"),
            "samples": samples,
            "tokens": tokens,
        }
        kl = ratio(st.get("kl_sum"), tokens) if beta > 0 else None
        return ObjectiveMetrics(parts["policy_term"] + parts["kl_term"], kl, parts)
