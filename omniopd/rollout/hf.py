"""transformers backend: batched sampling with left padding, one seed per sample; CPU or GPU.

We run our own decode loop instead of `model.generate` because `generate` draws every row
of a batch from one global random stream, so a sample would depend on its batch mates.
Here each row has its own `torch.Generator`, seeded with the sample's seed, and the
sampler sees the raw logits, which also gives the top-k logprobs of `entropy_source: topk`.

The generating model is also the scoring model (one copy of the weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from omniopd.models.loading import load_causal_lm, load_tokenizer, resolve_device
from omniopd.rollout.base import Generation, RolloutEngine, Sampling, sample_seeds
from omniopd.rollout.prompts import stop_token_ids
from omniopd.rollout.scoring import sequence_logprobs


class HFEngine(RolloutEngine):
    """Student sampler on transformers. `max_batch_rows`: samples decoded together."""

    backend = "hf"

    def __init__(
        self,
        model_path: str,
        *,
        tokenizer_path: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        max_batch_rows: int = 64,
    ):
        self.device = resolve_device(device)
        self.dtype = dtype
        self.tokenizer = load_tokenizer(tokenizer_path or model_path)
        self.model = load_causal_lm(model_path, dtype=dtype, device=self.device)
        self.stop_token_ids = stop_token_ids(self.tokenizer, model_path)
        self.max_batch_rows = max_batch_rows
        self.policy_version = 0
        self.checkpoint = str(model_path)

    @property
    def scoring_model(self):
        return self.model

    # ------------------------------------------------------------------ generation

    def generate(
        self, prompts: Sequence[Sequence[int]], n: int, sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[Generation]:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        per_prompt = sample_seeds(len(prompts), n, sampling, seeds)
        rows = [(i, j, list(prompts[i]), per_prompt[i][j]) for i in range(len(prompts)) for j in range(n)]
        for i, prompt in enumerate(prompts):
            if not prompt:
                raise ValueError(f"prompt {i} is empty; render it with prompts.render_prompt")
        out: list[Generation] = []
        for b0 in range(0, len(rows), self.max_batch_rows):
            out.extend(self._decode(rows[b0 : b0 + self.max_batch_rows], sampling))
        return out

    @torch.inference_mode()
    def _decode(self, rows: list[tuple[int, int, list[int], int]], sampling: Sampling) -> list[Generation]:
        dev = self.device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_token_ids[0]
        width = max(len(r[2]) for r in rows)
        B = len(rows)
        input_ids = torch.full((B, width), pad, dtype=torch.long)  # [B, P], left-padded
        mask = torch.zeros((B, width), dtype=torch.long)  # [B, P]
        for b, (_, _, prompt, _) in enumerate(rows):
            input_ids[b, width - len(prompt) :] = torch.tensor(prompt)
            mask[b, width - len(prompt) :] = 1
        input_ids, mask = input_ids.to(dev), mask.to(dev)
        gens = [torch.Generator(device=dev).manual_seed(seed) for *_, seed in rows]
        stops = torch.tensor(self.stop_token_ids, device=dev)
        max_stop_chars = max((len(s) for s in sampling.stop), default=0)

        tokens: list[list[int]] = [[] for _ in rows]
        sampled_lp: list[list[float]] = [[] for _ in rows]
        topk_lp: list[list[list[float]]] = [[] for _ in rows]
        finish: list[str | None] = [None] * B
        # Positions count real tokens only, so a left-padded row sees the same positions as
        # the same prompt alone.
        positions = (mask.cumsum(-1) - 1).clamp_min(0)  # [B, P]
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        cache, next_pos = out.past_key_values, positions[:, -1:] + 1  # [B, 1]
        logits = out.logits[:, -1, :].float()  # [B, V]
        for step in range(sampling.max_new_tokens):
            chosen = self._sample(logits, sampling, gens)  # [B]
            if sampling.topk_logprobs:
                logprobs = torch.log_softmax(logits, dim=-1)  # [B, V], raw temperature-1 distribution
                top = logprobs.topk(min(sampling.topk_logprobs, logprobs.shape[-1]), dim=-1).values.tolist()
                picked = logprobs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1).tolist()
            is_stop = torch.isin(chosen, stops).tolist()
            chosen_list = chosen.tolist()
            for b in range(B):
                if finish[b] is not None:
                    continue
                tokens[b].append(chosen_list[b])
                if sampling.topk_logprobs:
                    topk_lp[b].append(top[b])
                    sampled_lp[b].append(picked[b])
                if is_stop[b] or (max_stop_chars and self._hit_stop(tokens[b], sampling.stop, max_stop_chars)):
                    finish[b] = "stop"
                elif len(tokens[b]) == sampling.max_new_tokens:
                    finish[b] = "length"
            if all(f is not None for f in finish) or step == sampling.max_new_tokens - 1:
                break
            # Finished rows keep decoding a masked-out pad so the batch stays rectangular.
            alive = torch.tensor([f is None for f in finish], device=dev)
            feed = torch.where(alive, chosen, torch.full_like(chosen, pad)).unsqueeze(-1)  # [B, 1]
            mask = torch.cat([mask, alive.long().unsqueeze(-1)], dim=-1)  # [B, P + step + 1]
            out = self.model(input_ids=feed, attention_mask=mask, position_ids=next_pos, past_key_values=cache, use_cache=True)
            cache, next_pos = out.past_key_values, next_pos + 1
            logits = out.logits[:, -1, :].float()
        return [
            Generation(
                prompt_index=i,
                sample_index=j,
                seed=seed,
                prompt_token_ids=prompt,
                token_ids=tokens[b],
                text=self.tokenizer.decode(tokens[b], skip_special_tokens=True),
                finish_reason=finish[b] or "length",
                sampled_logprobs=sampled_lp[b] if sampling.topk_logprobs else None,
                topk_logprobs=topk_lp[b] if sampling.topk_logprobs else None,
            )
            for b, (i, j, prompt, seed) in enumerate(rows)
        ]

    @staticmethod
    def _sample(logits: torch.Tensor, sampling: Sampling, gens: list[torch.Generator]) -> torch.Tensor:
        """One token per row (logits [B, V] -> [B]): temperature, top-p, then the row's own generator."""
        if sampling.temperature == 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / sampling.temperature, dim=-1)  # [B, V]
        if sampling.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            # Keep the smallest head whose mass reaches top_p (the first token always stays).
            drop = (sorted_p.cumsum(-1) - sorted_p) >= sampling.top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        return torch.stack([torch.multinomial(probs[b], 1, generator=g)[0] for b, g in enumerate(gens)])

    def _hit_stop(self, tokens: list[int], stop: tuple[str, ...], max_chars: int) -> bool:
        # A stop string that ends in the newest token spans at most 4 bytes-tokens per char
        # (byte-level BPE), so decoding that tail is enough and keeps the check O(1) per step.
        tail = self.tokenizer.decode(tokens[-(4 * max_chars + 2) :], skip_special_tokens=True)
        return any(s in tail for s in stop)

    # --------------------------------------------------------------------- weights

    def load_weights(self, checkpoint_dir: str) -> str:
        from omniopd.rollout.weights import load_state_dict_strict

        load_state_dict_strict(self.model, checkpoint_dir)
        self.checkpoint = str(Path(checkpoint_dir))
        return "state_dict"

    def probe_logprobs(self, token_ids: Sequence[int]) -> list[float]:
        return sequence_logprobs(self.model, token_ids)

    def close(self) -> None:
        # Drop the weights; a closed engine cannot generate again.
        self.model = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
