"""Forward passes that stop at the final hidden states: [B, T, V] logits are never built.

`final_hidden` runs the transformer body (`model.get_decoder()`, i.e. `model.model` for
Qwen/Llama-style LMs) and returns its last hidden state — after the final norm, exactly
what the output layer multiplies. `logit_source` pairs it with the output layer's weight
as `HiddenStates`, which the sliced losses (omniopd/algo/sliced.py) turn into
log-probabilities and KLs block by block.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from omniopd.algo.sliced import HiddenStates
from omniopd.objectives.collate import Batch


def _decoder(model: torch.nn.Module) -> torch.nn.Module:
    body = model.get_decoder() if hasattr(model, "get_decoder") else None
    if body is None:
        raise TypeError(
            f"{type(model).__name__} has no get_decoder(); the learner needs a transformers "
            "causal LM whose body returns last_hidden_state (Qwen, Llama, Mistral, ...)"
        )
    return body


def check_supported(model: torch.nn.Module) -> None:
    """Refuse models whose logits are not hidden @ W.T (+ b): the sliced KL cannot see the rest."""
    config = getattr(model, "config", None)
    for attr in ("final_logit_softcapping", "logit_scale"):
        if getattr(config, attr, None):
            raise ValueError(
                f"{type(model).__name__} applies {attr} to its logits; the learner computes "
                "log-probabilities from hidden states and the output layer only, so this model is not supported"
            )


def final_hidden(model: torch.nn.Module, batch: Batch, *, autocast: torch.dtype | None = None) -> Tensor:
    """The body's last hidden state for `batch`: [B, L, H]; column j predicts batch.targets[:, j].

    autocast: run the body under torch.autocast with this dtype (bf16 on GPU); None = as loaded.
    Gradients flow unless the caller is under torch.no_grad().
    """
    device = next(model.parameters()).device
    batch = batch.to(device)
    scope = (
        torch.autocast(device_type=device.type, dtype=autocast)
        if autocast is not None
        else contextlib.nullcontext()
    )
    with scope:
        out = _decoder(model)(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        )
    return out.last_hidden_state


def logit_source(model: torch.nn.Module, hidden: Tensor) -> HiddenStates:
    """hidden [B, L, H] and the model's output layer as implicit logits (never materialised).

    The hidden states are cast to the output layer's dtype (under autocast the body returns
    bf16 while fp32 master weights stay fp32); that copy is [B, L, H], not [B, L, V].
    """
    head = model.get_output_embeddings()
    if head is None:
        raise TypeError(f"{type(model).__name__} has no output embeddings (lm_head)")
    return HiddenStates(hidden.to(head.weight.dtype), head.weight, getattr(head, "bias", None))
