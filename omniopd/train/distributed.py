"""Several learner processes (torchrun / accelerate): the process group, FSDP2 sharding of
the networks, each rank's share of a batch, and the collectives the step needs.

One process (WORLD_SIZE unset or 1) touches none of this: no process group, no wrapper,
the step runs exactly as before. With WORLD_SIZE = N > 1:

- `init_process_group` joins the group torchrun set up (nccl on CUDA, gloo on CPU) and
  pins each rank to cuda:LOCAL_RANK;
- `shard_model` applies FSDP2 `fully_shard` to every decoder layer and to a root
  `HiddenStatesRoot` around the model. The learner never calls the causal LM's forward
  (that would build [B, T, V] logits): it runs the body and reads the output layer's
  weight (forward.py). The root's forward does exactly that, so FSDP gathers the
  embeddings, final norm and output layer around it and reduce-scatters their gradients
  after backward. Gradients are SUMMED across ranks (divide factor 1): every rank's loss
  is already divided by the normaliser of the whole batch, so the sum is the full
  batch's gradient, as in one process;
- frozen networks (the reference of Eq. 8, the white-box teacher) are sharded the same
  way, so each rank holds 1/N of them; they are all-gathered layer by layer in forward;
- the step gives each rank a contiguous share of the batch's examples (`share`), and a
  rank whose share is empty still runs a zero-weighted forward and backward (the step's
  `filler`), because FSDP's all-gathers and reduce-scatters need every rank;
- `full_state` gathers a sharded state dict onto rank 0's CPU (checkpoints); `local_state`
  cuts a full one back into this rank's shards (resuming the optimizer).

Everything that talks to the store, the broker or the checkpoint directory runs on rank 0
(`is_main_process`); the loop keeps the other ranks in step (lockstep.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import Tensor

from omniopd.train.forward import final_hidden, logit_source

COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # a checkpoint save of a large student holds the others waiting


@dataclass(frozen=True)
class World:
    """This process's place: rank of size (0 of 1 = one process), local_rank = GPU index."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def current() -> World:
    """The initialised process group's rank and size, else torchrun's / accelerate's
    environment (RANK, WORLD_SIZE, LOCAL_RANK), else one process."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return World(torch.distributed.get_rank(), torch.distributed.get_world_size(), local)
    return World(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), local)


def world() -> tuple[int, int]:
    """(rank, world size) of this process (see `current`)."""
    w = current()
    return w.rank, w.size


def is_main_process() -> bool:
    """Rank 0: the only process that talks to the store, the driver and the checkpoint dir."""
    return current().is_main


def local_device(device: str) -> str:
    """`cuda` means this rank's GPU (cuda:LOCAL_RANK) under several processes."""
    w = current()
    return f"cuda:{w.local_rank}" if w.distributed and device == "cuda" else device


def init_process_group(device: str) -> World:
    """Join the process group of a multi-process launch (no-op for one process or when
    already joined): nccl when the learner runs on CUDA, gloo on CPU."""
    w = current()
    if not w.distributed or torch.distributed.is_initialized():
        return w
    if "MASTER_ADDR" not in os.environ:
        raise RuntimeError(
            f"WORLD_SIZE={w.size} but MASTER_ADDR is not set: launch the learner with torchrun "
            "(torchrun --nproc-per-node N -m omniopd learner ...) or accelerate launch"
        )
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(w.local_rank)
    torch.distributed.init_process_group(
        backend="nccl" if cuda else "gloo", rank=w.rank, world_size=w.size, timeout=COLLECTIVE_TIMEOUT
    )
    return current()


def close_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# ---------------------------------------------------------------- sharding


class HiddenStatesRoot(torch.nn.Module):
    """The root FSDP unit around a causal LM: one forward = the body's last hidden state
    [B, L, H] plus the output layer's (gathered) weight and bias — what `logit_source`
    pairs, computed inside a module forward so FSDP knows when to gather the parameters
    that are not in a decoder layer (embeddings, final norm, output layer)."""

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, batch, autocast: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        states = logit_source(self.lm, final_hidden(self.lm, batch, autocast=autocast))
        return states.hidden, states.weight, states.bias


def _decoder_layers(model: torch.nn.Module) -> Sequence[torch.nn.Module]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(base.get_decoder(), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        raise TypeError(
            f"{type(base).__name__}: no decoder layers at get_decoder().layers to shard; multi-process "
            "training supports Qwen / Llama / Mistral-style causal LMs"
        )
    return layers


def shard_model(model: torch.nn.Module) -> HiddenStatesRoot:
    """FSDP2 (full shard) over `model` in place: one unit per decoder layer and the root
    around it (module docstring); gradients summed across ranks. Returns the root, whose
    forward the step calls instead of the model's."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    for layer in _decoder_layers(model):
        fully_shard(layer)
    root = fully_shard(HiddenStatesRoot(model))
    for module in root.modules():
        if isinstance(module, FSDPModule):
            # a plain SUM: gloo has no PREMUL_SUM, and with factor 1 nothing is scaled after
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)
    return root


def share(items: Sequence, rank: int, size: int) -> list:
    """Rank `rank`'s contiguous share of `items` (sizes as equal as possible; may be empty)."""
    per, extra = divmod(len(items), size)
    start = rank * per + min(rank, extra)
    return list(items[start : start + per + (1 if rank < extra else 0)])


# ---------------------------------------------------------------- collectives


def broadcast_object(obj: Any = None, *, src: int = 0) -> Any:
    """`obj` of rank `src`, on every rank (pickled; for commands and examples, not tensors)."""
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def _is_dtensor(value: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(value, DTensor)


def full_tensor(value: Tensor) -> Tensor:
    """A sharded DTensor gathered whole (collective); a plain tensor as is."""
    return value.full_tensor() if _is_dtensor(value) else value


def full_state(state: Any, *, keep: bool) -> Any:
    """`state` (a state dict, nested dicts / lists allowed) with every DTensor gathered whole
    and every tensor copied to CPU where `keep` (rank 0); None elsewhere. Collective: every
    rank calls it with the same structure; one full tensor at a time is resident."""
    if isinstance(state, dict):
        out = {k: full_state(v, keep=keep) for k, v in state.items()}
        return out if keep else None
    if isinstance(state, list | tuple):
        out = [full_state(v, keep=keep) for v in state]
        return type(state)(out) if keep else None
    if isinstance(state, Tensor):
        whole = full_tensor(state.detach())
        return whole.to("cpu", copy=True).contiguous() if keep else None
    return state if keep else None


def local_state(value: Any, like: Tensor) -> Any:
    """A full tensor cut to `like`'s sharding (a DTensor parameter), else returned as is.
    Every rank holds the full tensor (read from a checkpoint), so no data moves."""
    if not (isinstance(value, Tensor) and _is_dtensor(like) and value.shape == like.shape):
        return value
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(value.to(like.device), like.device_mesh, like.placements, src_data_rank=None)
