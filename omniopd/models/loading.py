"""Load the student, the reference and the tokenizer from a local path or a hub id.

Hub ids work only where the hub is reachable or the model is already in the local cache;
on an offline machine the error says so and what to do instead of printing a stack trace.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message says what to fix."""


def resolve_device(device: str = "auto") -> str:
    """`auto` -> cuda when available, else cpu; anything else is returned as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> Any:
    """`auto` -> bfloat16 on GPU, float32 on CPU (CPU bf16 matmuls are slow and lossy)."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _offline() -> bool:
    # read at call time: huggingface_hub snapshots HF_HUB_OFFLINE at import
    return os.environ.get("HF_HUB_OFFLINE") == "1"


def _explain(name: str, what: str, exc: Exception) -> ModelLoadError:
    if not name:
        return ModelLoadError(f"no {what} path configured: set student.path (a local directory or a hub id)")
    path = Path(name).expanduser()
    if path.exists():
        return ModelLoadError(f"{what} at {path} could not be loaded: {exc.__class__.__name__}: {exc}")
    hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if not hub_id:
        return ModelLoadError(
            f"{what} {name!r}: no such directory. Build a tiny one with "
            f"`omniopd models make-tiny {name}` or point the config at a Hugging Face model directory."
        )
    offline = _offline()
    return ModelLoadError(
        f"{what} {name!r} is not in the local Hugging Face cache and the hub is "
        f"{'disabled (HF_HUB_OFFLINE=1)' if offline else 'unreachable'}. Download it where there "
        f"is network (`huggingface-cli download {name} --local-dir DIR`), copy DIR here, and set the path to DIR."
    )


def load_tokenizer(name: str):
    """A fast tokenizer with a pad token (falls back to EOS) and left padding for generation."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=_offline())
    except Exception as exc:  # transformers raises OSError, ValueError, HF errors...
        raise _explain(name, "tokenizer", exc) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_causal_lm(name: str, *, dtype: str = "auto", device: str = "auto", trainable: bool = False):
    """A causal LM on `device`; frozen (eval mode, no grads) unless `trainable`."""
    from transformers import AutoModelForCausalLM

    device = resolve_device(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=resolve_dtype(dtype, device), local_files_only=_offline()
        )
    except Exception as exc:
        raise _explain(name, "model", exc) from None
    model.to(device)
    if trainable:
        model.train()
    else:
        model.eval()
        model.requires_grad_(False)
    return model
