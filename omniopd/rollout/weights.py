"""Weight sync of a rollout engine to a published policy version, verified by a probe.

Before each rollout task the worker compares its loaded version with the newest one it may
use; on a new version it calls `load_version`, which

1. refuses a checkpoint with tied input/output embeddings (`tie_word_embeddings: true` in
   config.json): vLLM's in-place reload then keeps the OLD output layer and only logs a
   warning (docs/field-notes.md, "Weight reload"), so it would sample from a policy nobody trains;
2. reloads in place (vLLM: `collective_rpc("reload_weights")` + prefix-cache reset, or an
   engine restart where the engine cannot reload; transformers: a strict state-dict load);
3. verifies: the engine's own log-probabilities of a fixed probe sequence must match a
   fresh transformers load of the checkpoint within `probe_tolerance`, else
   `WeightSyncError` — the worker must stop rather than generate with wrong weights.

The times of the reload and of the check are returned so the worker can record them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from omniopd.rollout.base import RolloutEngine

PROBE_TEXT = (
    "Solve the following math problem step by step.\n\n"
    "What is 12 + 30?\nStep 1: 12 + 30 = 42.\nAnswer: 42"
)
"""The probe: ordinary prompt-and-answer text, so every layer and common tokens are exercised."""


class WeightSyncError(RuntimeError):
    """The engine's weights are not (or cannot be made) the checkpoint's; the message says why."""


@dataclass(frozen=True)
class ReloadReport:
    """One completed, verified reload. `max_abs_diff` is the probe's max |Δ logprob| (None when
    verification was skipped); `seconds` is the reload alone, `verify_seconds` the check."""

    version: int
    checkpoint: str
    method: str
    seconds: float
    verify_seconds: float
    max_abs_diff: float | None


def checkpoint_config(checkpoint_dir: str | Path) -> dict:
    path = Path(checkpoint_dir) / "config.json"
    if not path.is_file():
        raise WeightSyncError(f"checkpoint {checkpoint_dir}: no config.json (expected a Hugging Face model directory)")
    return json.loads(path.read_text())


def is_tied(config: dict) -> bool:
    # transformers' default for a missing key is True; multimodal configs nest it.
    if "tie_word_embeddings" in config:
        return bool(config["tie_word_embeddings"])
    text = config.get("text_config") or {}
    return bool(text.get("tie_word_embeddings", True))


def check_untied(checkpoint_dir: str | Path) -> None:
    """Refuse a checkpoint whose output layer is tied to the input embeddings."""
    if is_tied(checkpoint_config(checkpoint_dir)):
        raise WeightSyncError(
            f"checkpoint {checkpoint_dir} has tie_word_embeddings: true. vLLM's in-place reload "
            "keeps the OLD output layer for tied checkpoints (only a warning), so the engine would "
            "sample from stale weights. Save the policy untied: set config.tie_word_embeddings = "
            "False, give lm_head its own copy (model.lm_head.weight = torch.nn.Parameter("
            "model.get_input_embeddings().weight.detach().clone())), then save_pretrained()."
        )


def _weight_name(model: torch.nn.Module, module: torch.nn.Module | None) -> str | None:
    """The state-dict name of `module.weight` (by module identity: a tied weight has two names)."""
    name = next((n for n, m in model.named_modules() if m is module), None)
    return None if name is None else f"{name}.weight" if name else "weight"


def load_state_dict_strict(model: torch.nn.Module, checkpoint_dir: str | Path) -> None:
    """Copy every tensor of a safetensors checkpoint into `model`; every parameter must be covered.

    A missing or unexpected tensor is an error, never a silently kept old weight (the bug
    vLLM has with tied checkpoints). A tied checkpoint (no output-layer tensor) is loaded
    the way transformers loads it: the output layer becomes a copy of the new input
    embeddings. The model must be untied itself (each layer its own parameter).
    """
    from safetensors.torch import load_file

    files = sorted(Path(checkpoint_dir).glob("*.safetensors"))
    if not files:
        raise WeightSyncError(f"checkpoint {checkpoint_dir}: no *.safetensors files (save with safe_serialization=True)")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    out_name = _weight_name(model, model.get_output_embeddings())
    in_name = _weight_name(model, model.get_input_embeddings())
    if out_name and in_name and out_name not in state and in_name in state and is_tied(checkpoint_config(checkpoint_dir)):
        state[out_name] = state[in_name]
    expected = {name for name, _ in model.named_parameters()}
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        hint = ""
        if out_name in unexpected:
            hint = (
                f"; the loaded model's {out_name} is tied to its input embeddings (it was started from a "
                "tie_word_embeddings: true model): start rollout workers from an untied copy of the base model"
            )
        raise WeightSyncError(
            f"checkpoint {checkpoint_dir} does not match the loaded model: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}{hint}"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            if params[name].shape != tensor.shape:
                raise WeightSyncError(
                    f"checkpoint {checkpoint_dir}: {name} has shape {tuple(tensor.shape)}, the model "
                    f"{tuple(params[name].shape)} (a different architecture?)"
                )
            params[name].copy_(tensor)


def probe_token_ids(tokenizer) -> list[int]:
    return list(tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"])


def reference_logprobs(checkpoint_dir: str | Path, token_ids: list[int], *, dtype: str = "float32", device: str = "cpu") -> list[float]:
    """Probe log-probabilities from a fresh transformers load of the checkpoint (the ground truth)."""
    from omniopd.models.loading import load_causal_lm
    from omniopd.rollout.scoring import sequence_logprobs

    model = load_causal_lm(str(checkpoint_dir), dtype=dtype, device=device)
    try:
        return sequence_logprobs(model, token_ids)
    finally:
        del model


def verify_probe(
    engine: RolloutEngine, checkpoint_dir: str | Path, tolerance: float, *, reference_dtype: str = "float32", reference_device: str = "cpu"
) -> float:
    """Max |engine logprob - checkpoint logprob| over the probe; WeightSyncError above `tolerance`."""
    ids = probe_token_ids(engine.tokenizer)
    got = engine.probe_logprobs(ids)
    want = reference_logprobs(checkpoint_dir, ids, dtype=reference_dtype, device=reference_device)
    diff = max(abs(a - b) for a, b in zip(got, want, strict=True))
    if not diff <= tolerance:  # also catches NaN
        tied = is_tied(checkpoint_config(checkpoint_dir))
        cause = (
            "the checkpoint has tie_word_embeddings: true, and an in-place reload keeps the old "
            "output layer for tied weights — save the checkpoint untied"
            if tied
            else "the reload did not take (stale or partially loaded weights), or the engine runs "
            "in a lower precision than the check (bf16/fp16: raise rollout.probe_tolerance to ~0.05)"
        )
        raise WeightSyncError(
            f"{engine.backend} engine after loading {checkpoint_dir}: probe log-probabilities differ "
            f"from a fresh load of the checkpoint by up to {diff:.3g} (tolerance {tolerance:g}). "
            f"Likely cause: {cause}. Stopping: generating now would sample from the wrong policy."
        )
    return diff


def load_version(
    engine: RolloutEngine,
    checkpoint_dir: str | Path,
    version: int,
    *,
    tolerance: float,
    refuse_tied: bool = True,
    verify: bool = True,
) -> ReloadReport:
    """Load policy `version` from `checkpoint_dir` into `engine`, then verify it by the probe.

    `refuse_tied=False` skips the config check (then only the probe can catch a tied
    checkpoint); `verify=False` skips the probe. On any error the engine's version is left
    unchanged, and the engine must not be used to generate for the new version.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if refuse_tied:
        check_untied(checkpoint_dir)
    t0 = time.perf_counter()
    method = engine.load_weights(str(checkpoint_dir))
    seconds = time.perf_counter() - t0
    diff = None
    t1 = time.perf_counter()
    if verify:
        diff = verify_probe(engine, checkpoint_dir, tolerance)
    engine.policy_version = version
    return ReloadReport(
        version=version,
        checkpoint=str(checkpoint_dir),
        method=method,
        seconds=seconds,
        verify_seconds=time.perf_counter() - t1,
        max_abs_diff=diff,
    )
