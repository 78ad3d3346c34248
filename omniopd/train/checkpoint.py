"""Checkpoints: a Hugging Face model directory rollout workers (vLLM) can load, plus the
learner's state to resume from, written atomically.

Layout of `<output_dir>/checkpoints/step-00000040/`:

    config.json, model*.safetensors, generation_config.json, tokenizer files
                                the policy, untied (tie_word_embeddings: false and its own
                                lm_head.weight), in the student's master precision
    adapter/                    LoRA runs only: the adapters (the model files are merged)
    trainer/optimizer.pt, trainer/scheduler.pt, trainer/rng.pt
    omniopd_trainer.json        step, policy version, flags — written last

Untied on save: vLLM's in-place reload keeps the OLD output layer of a tied checkpoint and
only warns (docs/field-notes.md, "Weight reload"), so a tied student (Qwen3-0.6B/1.7B/4B) is saved with a copy of
its embedding as lm_head. Training itself stays tied; resuming loads both names into the
one tied parameter.

Atomicity: everything is written into `.tmp-step-...` beside the final directory, every
file and the directory are fsynced, then one rename publishes it and the parent directory
is fsynced. A crash leaves either a complete checkpoint or a temporary directory that
`clean_partial` removes; `latest_checkpoint` only sees complete ones.

Integrity: `omniopd_trainer.json` lists every file with its size, and `verify_checkpoint`
checks a checkpoint against it without loading the tensors: the sizes, each safetensors
header against its file's length, each torch file's zip directory (a truncated file has
none). A save is verified before its rename; resuming takes the newest checkpoint that
verifies (`resume_point`), setting damaged newer ones aside under a name that says so.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import shutil
import struct
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "omniopd_trainer.json"
TRAINER_DIR = "trainer"
ADAPTER_DIR = "adapter"
FORMAT = 1
_NAME = re.compile(r"^step-(\d{8})$")


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint: `path` is the HF model directory; it follows learner step
    `step` and is published as `policy_version`."""

    path: Path
    step: int
    policy_version: int
    lora: bool
    student_tied: bool
    meta: dict[str, Any]

    @property
    def adapter_dir(self) -> Path:
        return self.path / ADAPTER_DIR


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_path(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step:08d}"


# ------------------------------------------------------------------ model state


def _param_name(model: torch.nn.Module, module: torch.nn.Module | None) -> str | None:
    name = next((n for n, m in model.named_modules() if m is module), None)
    return None if name is None else (f"{name}.weight" if name else "weight")


def untied_state(
    model: torch.nn.Module, *, state: dict[str, torch.Tensor] | None = None
) -> tuple[dict[str, torch.Tensor], Any]:
    """(state dict, config) of a transformers model with the output layer as its own tensor
    and `tie_word_embeddings: false`; tensors on CPU, detached, contiguous, unshared.
    `state`: the model's state already on CPU (gathered from shards), else read from `model`."""
    if state is None:
        state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    out_name = _param_name(model, model.get_output_embeddings())
    in_name = _param_name(model, model.get_input_embeddings())
    tied = out_name is not None and model.get_output_embeddings().weight is model.get_input_embeddings().weight
    if out_name and in_name and (tied or out_name not in state):
        state[out_name] = state[in_name].clone()  # its own storage: safetensors refuses shared tensors
    config = copy.deepcopy(model.config)
    config.tie_word_embeddings = False
    return state, config


def merged_lora_state(peft_model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], Any]:
    """The base model's state with every active LoRA delta added (W + B A * scale), untied,
    under the base model's own tensor names — what `merge_and_unload()` would save, computed
    without touching the training weights (merge then unmerge would drift in bf16)."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    raw, config = untied_state(base)
    state = {k.replace(".base_layer.", "."): v for k, v in raw.items() if "lora_" not in k}
    with torch.no_grad():
        for name, module in base.named_modules():
            if not isinstance(module, LoraLayer):
                continue
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    key = f"{name}.weight"
                    delta = module.get_delta_weight(adapter).to("cpu", state[key].dtype)
                    state[key] = state[key] + delta
    return state, config


# ------------------------------------------------------------------ rng


def capture_rng() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


# ------------------------------------------------------------------ writing


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_model_dir(directory: Path, state: dict[str, torch.Tensor], config, *, generation_config=None,
                    tokenizer=None, max_shard_size: str = "5GB") -> None:
    """A Hugging Face model directory: config.json, safetensors (sharded with an index when
    large), generation config and tokenizer."""
    from huggingface_hub import save_torch_state_dict

    directory.mkdir(parents=True, exist_ok=True)
    save_torch_state_dict(state, directory, max_shard_size=max_shard_size, safe_serialization=True)
    config.save_pretrained(directory)
    if generation_config is not None:
        generation_config.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def save_checkpoint(
    root: str | Path,
    *,
    step: int,
    policy_version: int,
    model_state: dict[str, torch.Tensor],
    model_config,
    optimizer: torch.optim.Optimizer,
    scheduler,
    optimizer_state: dict[str, Any] | None = None,
    generation_config=None,
    tokenizer=None,
    adapter_model: torch.nn.Module | None = None,
    student_tied: bool = False,
    meta: dict[str, Any] | None = None,
) -> CheckpointInfo:
    """Write checkpoint `step` atomically (module docstring); returns it.

    `model_state`/`model_config`: from `untied_state` or `merged_lora_state`;
    `adapter_model`: the peft model of a LoRA run (its adapters are saved for resume);
    `optimizer_state`: the optimizer's state gathered from shards (default: `optimizer`'s).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(root, step)
    if final.exists():
        raise FileExistsError(f"checkpoint {final} already exists; a learner step is checkpointed once")
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write_model_dir(tmp, model_state, model_config, generation_config=generation_config, tokenizer=tokenizer)
    if adapter_model is not None:
        adapter_model.save_pretrained(tmp / ADAPTER_DIR, safe_serialization=True)
    (tmp / TRAINER_DIR).mkdir()
    torch.save(optimizer.state_dict() if optimizer_state is None else optimizer_state,
               tmp / TRAINER_DIR / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / TRAINER_DIR / "scheduler.pt")
    torch.save(capture_rng(), tmp / TRAINER_DIR / "rng.pt")
    state = {
        "format": FORMAT,
        "step": step,
        "policy_version": policy_version,
        "lora": adapter_model is not None,
        "student_tied": student_tied,
        "saved_at": time.time(),
        "meta": meta or {},
        "files": _file_sizes(tmp),
    }
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")  # last: marks it complete
    _fsync_tree(tmp)
    problem = verify_checkpoint(tmp)
    if problem is not None:  # e.g. a full disk that truncated a file without an error
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(f"checkpoint {final.name} failed its check after writing ({problem}); nothing was published")
    os.rename(tmp, final)
    _fsync_dir(root)
    return _info(final, state)


# ------------------------------------------------------------------ reading


def _info(path: Path, state: dict[str, Any]) -> CheckpointInfo:
    return CheckpointInfo(path, int(state["step"]), int(state["policy_version"]), bool(state["lora"]),
                          bool(state["student_tied"]), dict(state.get("meta", {})))


def read_checkpoint(path: str | Path) -> CheckpointInfo:
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a complete OmniOPD checkpoint ({exc})") from None
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: checkpoint format {state.get('format')} (this version reads {FORMAT})")
    return _info(path, state)


def list_checkpoints(root: str | Path) -> list[CheckpointInfo]:
    """Complete checkpoints under `root`, oldest first (temporary directories, and ones
    whose state file cannot be read, are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if _NAME.match(child.name) and (child / STATE_FILE).is_file():
            try:
                found.append(read_checkpoint(child))
            except ValueError:
                continue
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(root: str | Path) -> CheckpointInfo | None:
    """The newest checkpoint that verifies (None if there is none); damaged ones are skipped."""
    for path in _candidates(root):
        if verify_checkpoint(path) is None:
            return read_checkpoint(path)
    return None


def _candidates(root: str | Path) -> list[Path]:
    """Checkpoint directories by name, newest first, whatever their state."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((c for c in root.iterdir() if _NAME.match(c.name) and c.is_dir()), key=lambda c: c.name, reverse=True)


# ------------------------------------------------------------------ integrity


def _file_sizes(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != STATE_FILE}


def _safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is unusable (header unreadable, data shorter than it says)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"{path.name} is {size} bytes, too short for a safetensors header"
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return f"{path.name}: its header claims {length} bytes but the file has {size} (truncated)"
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            return f"{path.name}: its header is not readable JSON"
    ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    needed = 8 + length + max(ends, default=0)
    if needed != size:
        return f"{path.name} is {size} bytes but its tensors need {needed} (truncated or padded)"
    return None


def verify_checkpoint(path: str | Path) -> str | None:
    """Why the checkpoint at `path` cannot be resumed from, or None if it is intact (module
    docstring: sizes, safetensors headers, torch zip directories; no tensor is loaded)."""
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text())
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return f"{STATE_FILE} is missing or unreadable ({exc})"
    if state.get("format") != FORMAT:
        return f"checkpoint format {state.get('format')!r} (this version reads {FORMAT})"
    for name, size in (state.get("files") or {}).items():  # older checkpoints have no list
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} is {file.stat().st_size} bytes, {size} were written"
    required = ["config.json", f"{TRAINER_DIR}/optimizer.pt", f"{TRAINER_DIR}/scheduler.pt", f"{TRAINER_DIR}/rng.pt"]
    for name in required:
        if not (path / name).is_file():
            return f"{name} is missing"
    tensors = sorted(path.rglob("*.safetensors"))
    if not tensors:
        return "no .safetensors weights"
    for file in tensors:
        problem = _safetensors_problem(file)
        if problem is not None:
            return problem
    for file in sorted((path / TRAINER_DIR).glob("*.pt")):
        try:
            with zipfile.ZipFile(file):  # torch.save's format; a cut file has no central directory
                pass
        except (zipfile.BadZipFile, OSError) as exc:
            return f"{TRAINER_DIR}/{file.name} is unreadable ({exc}; truncated?)"
    return None


@dataclass(frozen=True)
class Damaged:
    """A checkpoint that failed verification, and where it was moved (out of the way of the
    step that will be saved again under its name)."""

    path: Path
    moved_to: Path
    reason: str


def resume_point(root: str | Path) -> tuple[CheckpointInfo | None, list[Damaged]]:
    """The newest intact checkpoint under `root`, and the damaged newer ones, each renamed to
    `damaged-step-...` beside it (kept for inspection; never listed or pruned)."""
    damaged = []
    for path in _candidates(root):
        problem = verify_checkpoint(path)
        if problem is None:
            return read_checkpoint(path), damaged
        moved = path.with_name(f"damaged-{path.name}-{int(time.time())}")
        os.rename(path, moved)
        damaged.append(Damaged(path, moved, problem))
    return None, damaged


def clean_partial(root: str | Path) -> list[Path]:
    """Remove temporary directories left by a crash during a save; returns them."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(".tmp-step-") and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


def prune_checkpoints(root: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints; returns the deleted paths."""
    found = list_checkpoints(root)
    doomed = [c.path for c in found[: max(len(found) - keep, 0)]]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def load_trainer_state(info: CheckpointInfo, optimizer: torch.optim.Optimizer, scheduler, *,
                       shard: bool = False) -> None:
    """Restore optimizer, schedule and RNG state from `info` (weights are loaded with the models).

    The optimizer state is saved whole whatever the number of processes; `shard`: cut it to
    this rank's shards of the (FSDP) parameters, so any world size resumes any checkpoint."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    device = params[0].device if params else torch.device("cpu")
    directory = info.path / TRAINER_DIR
    state = torch.load(directory / "optimizer.pt", map_location=device, weights_only=True)
    if shard:
        from omniopd.train.distributed import local_state

        # state["state"] is keyed by the parameter's index in param_groups order
        state["state"] = {i: {k: local_state(v, params[i]) for k, v in s.items()} for i, s in state["state"].items()}
    optimizer.load_state_dict(state)
    scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=True))
    restore_rng(torch.load(directory / "rng.pt", weights_only=True))
