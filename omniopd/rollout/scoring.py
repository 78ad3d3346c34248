"""Exact per-token log-probabilities and entropies (Eq. 6) from one teacher-forced forward.

    H_t = - sum_{v in V} pi_theta(v | x, y_<t) log pi_theta(v | x, y_<t)        (Eq. 6)

The sampler only samples; this pass scores what it sampled with the current policy
weights: one forward of the transformer body over prompt + completion, then the output
layer applied to `slice_tokens` completion positions at a time. So the [T, V] float32
logits of a long sequence never exist at once: peak extra memory is slice_tokens x V
floats (512 x 151,936 x 4 B = 311 MB for Qwen3) instead of T x V (4096 tokens: 2.5 GB).

Numbers are those of the raw (temperature-1) model distribution, the pi_theta of the
paper, whatever temperature sampled the tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from omniopd.algo.entropy import token_logprobs_and_entropy


@dataclass(frozen=True)
class TokenScores:
    """Scores of one completion. Invariant: `logprobs` and `entropies` have one entry per
    completion token; entropies >= 0 (nats), logprobs <= 0."""

    logprobs: list[float]
    entropies: list[float]


def _body_and_head(model):
    """The transformer body (hidden states) and the output layer of a causal LM."""
    body = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings()
    if body is None or head is None:
        raise TypeError(
            f"{type(model).__name__} does not expose get_decoder()/get_output_embeddings(); "
            "the sliced scoring pass needs a standard transformers causal LM"
        )
    return body, head


@torch.inference_mode()
def score_completions(
    model,
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    slice_tokens: int = 512,
    batch_tokens: int = 16_384,
) -> list[TokenScores]:
    """Log pi_theta(y_t | x, y_<t) and H_t (Eq. 6) for every completion token.

    sequences: (prompt_ids, completion_ids) pairs. Sequences are right-padded into batches of
    at most `batch_tokens` padded tokens (causal attention: right padding never changes the
    real positions); each batch takes one body forward, then the output layer runs on
    `slice_tokens` completion positions at a time. Returns one TokenScores per sequence,
    in order. An empty completion scores as empty lists.
    """
    if slice_tokens < 1:
        raise ValueError(f"slice_tokens must be >= 1, got {slice_tokens}")
    body, head = _body_and_head(model)
    softcap = getattr(model.config, "final_logit_softcapping", None)
    device = next(model.parameters()).device
    results: list[TokenScores | None] = [None] * len(sequences)
    for batch in _batches(sequences, batch_tokens):
        rows = [list(sequences[i][0]) + list(sequences[i][1]) for i in batch]
        width = max(len(r) for r in rows)
        input_ids = torch.zeros(len(rows), width, dtype=torch.long)  # [B, L]
        attention_mask = torch.zeros(len(rows), width, dtype=torch.long)  # [B, L]
        for b, row in enumerate(rows):
            input_ids[b, : len(row)] = torch.tensor(row)
            attention_mask[b, : len(row)] = 1
        hidden = body(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
        ).last_hidden_state  # [B, L, H]
        for b, i in enumerate(batch):
            prompt, completion = sequences[i]
            p, t = len(prompt), len(completion)
            if p == 0 and t:
                raise ValueError(f"sequence {i}: an empty prompt leaves no context for the first token")
            targets = torch.tensor(list(completion), dtype=torch.long, device=device)  # [T]
            logprobs, entropies = [], []
            # Position p - 1 + s predicts completion token s.
            for s0 in range(0, t, slice_tokens):
                s1 = min(s0 + slice_tokens, t)
                logits = head(hidden[b, p - 1 + s0 : p - 1 + s1])  # [S, V]
                if softcap:
                    logits = torch.tanh(logits / softcap) * softcap
                lp, ent = token_logprobs_and_entropy(logits, targets[s0:s1])
                logprobs.append(lp)
                entropies.append(ent)
            results[i] = TokenScores(
                logprobs=torch.cat(logprobs).tolist() if t else [],
                entropies=torch.cat(entropies).tolist() if t else [],
            )
        del hidden
    return [r for r in results if r is not None]


def _batches(sequences: Sequence[tuple[Sequence[int], Sequence[int]]], batch_tokens: int) -> list[list[int]]:
    """Indices grouped so that (rows x longest row) <= batch_tokens; sorted by length to cut padding."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]) + len(sequences[i][1]))
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        length = len(sequences[i][0]) + len(sequences[i][1])
        if current and (len(current) + 1) * max(width, length) > batch_tokens:
            batches.append(current)
            current, width = [], 0
        current.append(i)
        width = max(width, length)
    if current:
        batches.append(current)
    return batches


@torch.inference_mode()
def sequence_logprobs(model, token_ids: Sequence[int]) -> list[float]:
    """log pi(token_ids[t] | token_ids[<t]) for t = 1 .. len-1 (the probe of weights.py)."""
    if len(token_ids) < 2:
        raise ValueError("a probe needs at least two tokens")
    (scores,) = score_completions(model, [(token_ids[:1], token_ids[1:])])
    return scores.logprobs
