"""The learner's networks: the trained student, the frozen reference, the white-box teacher.

- Student: trainable. `student_dtype: auto` keeps float32 master weights on every device
  (bf16 weights would round away updates of lr = 1e-6, the paper's rate); the forward runs
  under bf16 autocast on GPU instead. A tied student (Qwen3-0.6B/1.7B/4B) is trained tied;
  only its checkpoints are written untied (checkpoint.py).
- Reference (pi_ref of Eq. 8): a frozen copy of the base model by default. With LoRA it is
  the student itself with its adapters disabled (`peft`'s `disable_adapter()`), so no
  second copy of the weights exists. Not loaded at all when it is not needed (beta = 0,
  or a method without a KL anchor).
- Teacher (white-box OPD only, Eq. 2): a frozen open-weight model that must share the
  student's tokenizer (checked here, token by token).
- Several processes (torchrun): every network is loaded whole on each rank, then sharded
  with FSDP2 (distributed.py); the step reaches them through `student_states` /
  `frozen_states`, which call the sharded root's forward instead of the body directly.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from omniopd.algo.sliced import HiddenStates
from omniopd.models.loading import load_causal_lm, load_tokenizer, resolve_device
from omniopd.objectives.collate import Batch
from omniopd.train.distributed import (
    HiddenStatesRoot,
    current,
    init_process_group,
    local_device,
    shard_model,
)
from omniopd.train.forward import check_supported, final_hidden, logit_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraSpec:
    """LoRA adapters on `target_modules` (rank r, scaling alpha / r)."""

    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class ModelSpec:
    """Where the networks come from. reference_path / teacher_path None = not loaded.
    student_dtype `auto` = float32 master weights; frozen_dtype `auto` = bf16 on GPU, fp32 on CPU."""

    student_path: str
    tokenizer_path: str | None
    device: str
    student_dtype: str = "auto"
    frozen_dtype: str = "auto"
    reference_path: str | None = None
    teacher_path: str | None = None
    lora: LoraSpec | None = None


@dataclass
class PolicyModels:
    """student: trainable (a peft model under LoRA); reference: frozen model, or None (not
    needed, or LoRA: the student with adapters disabled — see `reference_model`); teacher:
    frozen white-box teacher or None. `student_tied`: the student's output layer is its input
    embedding (saved untied). `roots`: under several processes, the FSDP root of each
    sharded network by role (student / reference / teacher); empty in one process."""

    student: torch.nn.Module
    tokenizer: object
    reference: torch.nn.Module | None
    teacher: torch.nn.Module | None
    lora: bool
    reference_needed: bool
    student_tied: bool
    roots: dict[str, HiddenStatesRoot] = field(default_factory=dict)

    @property
    def sharded(self) -> bool:
        return bool(self.roots)

    @property
    def device(self) -> torch.device:
        return next(self.student.parameters()).device

    def base_model(self) -> torch.nn.Module:
        """The transformers model under the peft wrapper (the student itself without LoRA)."""
        return self.student.get_base_model() if self.lora else self.student

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        # A tied weight appears once in parameters(), so it is clipped and stepped once.
        return [p for p in self.student.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def reference_model(self) -> Iterator[torch.nn.Module]:
        """pi_ref for the KL anchor: the frozen copy, or (LoRA) the student without adapters."""
        if not self.reference_needed:
            raise RuntimeError("no reference model was loaded (beta = 0 or the method needs none)")
        if self.lora:
            with self.student.disable_adapter():
                yield self.student
        else:
            yield self.reference

    def student_states(self, batch: Batch, *, autocast: torch.dtype | None) -> HiddenStates:
        """The student's hidden states + output layer for `batch`, with gradients."""
        return self._states("student", self.student, batch, autocast)

    @torch.no_grad()
    def frozen_states(self, role: str, batch: Batch, *, autocast: torch.dtype | None) -> HiddenStates:
        """pi_ref (`reference`) or the white-box teacher (`teacher`) for `batch`, no gradients."""
        if role == "teacher":
            if self.teacher is None:
                raise RuntimeError("no white-box teacher was loaded (loss.whitebox_teacher)")
            return self._states("teacher", self.teacher, batch, autocast)
        with self.reference_model() as ref:
            return self._states("reference", ref, batch, autocast)

    def _states(self, role: str, model: torch.nn.Module, batch: Batch, autocast) -> HiddenStates:
        root = self.roots.get(role)
        if root is None:  # one process: the body and the output layer directly (forward.py)
            return logit_source(model, final_hidden(model, batch, autocast=autocast))
        return HiddenStates(*root(batch, autocast))


def _is_tied(model: torch.nn.Module) -> bool:
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    return out is not None and inp is not None and out.weight is inp.weight


def safetensors_state(directory: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face checkpoint directory (single file or shards)."""
    from safetensors.torch import load_file

    files = sorted(Path(directory).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no *.safetensors files (is it a checkpoint directory?)")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    return state


def load_student_weights(model: torch.nn.Module, directory: str | Path) -> None:
    """Copy a checkpoint written by checkpoint.py into `model` (strict: every tensor must match).

    Checkpoints are untied; into a tied model both names load the same values (the saved
    output layer is a copy of the embedding), so the model stays tied.
    """
    state = safetensors_state(directory)
    dtypes = {p.dtype for p in model.parameters()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {directory} does not match the student: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]} (a checkpoint of another model?)"
        )
    if {p.dtype for p in model.parameters()} != dtypes:  # load_state_dict copies, never recasts
        raise AssertionError("parameter dtypes changed while loading a checkpoint")


def _apply_lora(model: torch.nn.Module, spec: LoraSpec, adapter_from: Path | None) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    lora = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    if adapter_from is not None:
        result = set_peft_model_state_dict(model, safetensors_state(adapter_from))
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"adapter {adapter_from}: unexpected tensors {result.unexpected_keys[:5]}")
    return model


def _check_shared_vocabulary(student_tok, teacher_path: str, student, teacher) -> None:
    teacher_tok = load_tokenizer(teacher_path)
    if student_tok.get_vocab() != teacher_tok.get_vocab():
        raise ValueError(
            f"white-box OPD needs a shared tokenizer, but the teacher at {teacher_path} has a different "
            "vocabulary than the student; use loss.method: omniopd for teachers with other tokenizers"
        )
    s, t = student.get_output_embeddings().weight.shape[0], teacher.get_output_embeddings().weight.shape[0]
    if s != t:
        raise ValueError(f"student and teacher output layers differ in size ({s} vs {t} tokens)")


def load_policy_models(
    spec: ModelSpec, *, weights_from: str | Path | None = None, adapter_from: str | Path | None = None
) -> PolicyModels:
    """Load the networks of `spec`. Resuming: `weights_from` = a full fine-tuning checkpoint
    (student weights), `adapter_from` = a LoRA checkpoint's adapter directory."""
    size = current().size
    if size > 1 and spec.lora is not None:
        raise ValueError(
            f"this learner is one of {size} processes, and LoRA training runs as one process in this "
            "version: set learner.lora.enabled: false to shard the full student with FSDP, or launch "
            "one process (LoRA already fits large students on one GPU)"
        )
    world = init_process_group(resolve_device(spec.device))
    device = local_device(resolve_device(spec.device))
    student_dtype = "float32" if spec.student_dtype == "auto" else spec.student_dtype
    if student_dtype != "float32":
        log.warning("student weights in %s: AdamW updates below its precision are lost; "
                    "prefer student.dtype: auto (fp32 master weights + bf16 autocast)", student_dtype)
    tokenizer = load_tokenizer(spec.tokenizer_path or spec.student_path)
    student = load_causal_lm(spec.student_path, dtype=student_dtype, device=device, trainable=True)
    check_supported(student)
    tied = _is_tied(student)
    if weights_from is not None:
        load_student_weights(student, weights_from)
    if spec.lora is not None:
        student = _apply_lora(student, spec.lora, None if adapter_from is None else Path(adapter_from))
    else:
        student.requires_grad_(True)
    student.train()
    reference = None
    if spec.reference_path is not None and spec.lora is None:
        reference = load_causal_lm(spec.reference_path, dtype=spec.frozen_dtype, device=device)
    teacher = None
    if spec.teacher_path is not None:
        teacher = load_causal_lm(spec.teacher_path, dtype=spec.frozen_dtype, device=device)
        check_supported(teacher)
        _check_shared_vocabulary(tokenizer, spec.teacher_path, student, teacher)
    roots = {}
    if world.distributed:  # every rank loaded the same weights; now each keeps 1/N of them
        roots = {role: shard_model(m) for role, m in
                 (("student", student), ("reference", reference), ("teacher", teacher)) if m is not None}
    return PolicyModels(
        student=student,
        tokenizer=tokenizer,
        reference=reference,
        teacher=teacher,
        lora=spec.lora is not None,
        reference_needed=spec.reference_path is not None,
        student_tied=tied,
        roots=roots,
    )


def pad_token_id(tokenizer) -> int:
    """Padding id for collation (any id works: padded columns are masked everywhere)."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


