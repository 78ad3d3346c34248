"""The learner step as two real processes (gloo on CPU, FSDP2 full shard) against one process.

Each test spawns two ranks with torch.multiprocessing; the ranks write what they saw into
files the test reads back. The student AND the frozen reference are sharded (beta > 0).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from omniopd.train import build_trainer, latest_checkpoint
from omniopd.train.checkpoint import read_checkpoint
from omniopd.train.distributed import share
from tests.train.conftest import fixed_examples, make_config

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)


def _full_grads(trainer) -> dict[str, torch.Tensor]:
    from omniopd.train.distributed import full_tensor

    return {n: full_tensor(p.grad).clone() for n, p in trainer.models.student.named_parameters()
            if p.grad is not None}


def _capture_grads(trainer, into: list) -> None:
    """Record the (whole) gradient each update is about to apply (collective on every rank)."""
    trainer.optimizer.register_step_pre_hook(lambda *_: into.append(_full_grads(trainer)))


def _full_params(trainer) -> dict[str, torch.Tensor]:
    from omniopd.train.distributed import full_state

    return full_state(trainer.models.student.state_dict(), keep=True)


def _train_two_steps(rank: int, port: int, model_dir: str, out: str) -> None:
    """Rank `rank`: step on 5 examples (3 / 2 per rank, grad_accum 2), then on 1 example (rank 1
    has nothing: it runs the zero-weighted filler), then checkpoint."""
    from omniopd.train.distributed import close_process_group

    _join(rank, port)
    trainer = build_trainer(make_config(model_dir, learner={"grad_accum": 2}))
    assert trainer.models.sharded and set(trainer.models.roots) == {"student", "reference"}
    grads: list = []
    _capture_grads(trainer, grads)
    m1 = trainer.step(fixed_examples(5))
    after1 = _full_params(trainer)
    m2 = trainer.step(fixed_examples(5)[:1])
    info = trainer.save(Path(out) / "ckpt", policy_version=1)
    assert (info is None) == (rank != 0)
    torch.save({"metrics": [m1, m2], "grads": grads, "after1": after1, "after2": _full_params(trainer)},
               Path(out) / f"rank{rank}.pt")
    close_process_group()


def _spawn(fn, *args) -> None:
    mp.spawn(fn, args=(_free_port(), *args), nprocs=WORLD, join=True)


@pytest.fixture(scope="module")
def two_ranks(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two-ranks")
    _spawn(_train_two_steps, tiny_model_dir, str(out))
    return out


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("one-process")
    trainer = build_trainer(make_config(tiny_model_dir, learner={"grad_accum": 2}))
    grads: list = []
    trainer.optimizer.register_step_pre_hook(
        lambda *_: grads.append({n: p.grad.clone() for n, p in trainer.models.student.named_parameters()
                                 if p.grad is not None}))
    m1 = trainer.step(fixed_examples(5))
    after1 = {k: v.clone() for k, v in trainer.models.student.state_dict().items()}
    m2 = trainer.step(fixed_examples(5)[:1])
    info = trainer.save(out / "ckpt", policy_version=1)
    return {"metrics": [m1, m2], "grads": grads, "after1": after1, "info": info,
            "after2": {k: v.clone() for k, v in trainer.models.student.state_dict().items()}}


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


# Weights after AdamW: an element whose gradient is near Adam's eps turns fp32 rounding of the
# gradient (different summation order across ranks) into ~1e-3 of a step (lr 1e-3): 1e-6.
# Gradients themselves are compared at 1e-6 (a gradient averaged instead of summed fails).
WEIGHTS_ATOL = 1e-5


def test_ranks_share_the_examples_contiguously_and_completely():
    items = list(range(5))
    assert [share(items, r, 2) for r in range(2)] == [[0, 1, 2], [3, 4]]
    assert [share(items[:1], r, 2) for r in range(2)] == [[0], []]
    assert [x for r in range(3) for x in share(items, r, 3)] == items


def test_two_ranks_compute_the_loss_and_gradients_of_one_process(two_ranks, one_process):
    ranks = [torch.load(two_ranks / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for dist in ranks:
        for got, want in zip(dist["metrics"], one_process["metrics"], strict=True):
            assert got.loss == pytest.approx(want.loss, rel=1e-5)
            assert got.grad_norm == pytest.approx(want.grad_norm, rel=1e-5)
            assert got.kl == pytest.approx(want.kl, abs=1e-6)  # a small difference of fp32 log-probs
            assert (got.rows, got.loss_tokens, got.forward_tokens) == (want.rows, want.loss_tokens, want.forward_tokens)
            for key, value in want.parts.items():
                assert got.parts[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
        assert len(dist["grads"]) == 2
        for got, want in zip(dist["grads"], one_process["grads"], strict=True):
            _close(got, want)
    assert ranks[0]["metrics"][1].kl > 0  # step 2 saw a sharded reference that differs


def test_after_each_update_both_ranks_hold_the_one_process_weights(two_ranks, one_process):
    ranks = [torch.load(two_ranks / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for key in ("after1", "after2"):
        _close(ranks[0][key], ranks[1][key], atol=0)  # the very same update on both ranks
        _close(ranks[0][key], one_process[key], atol=WEIGHTS_ATOL)
    moved = [k for k in one_process["after1"] if not torch.equal(one_process["after1"][k], one_process["after2"][k])]
    assert moved  # the second update (rank 1 ran only the zero-weighted filler) changed the weights


def test_rank_zero_alone_writes_the_gathered_checkpoint_in_the_one_process_format(two_ranks, one_process):
    info = latest_checkpoint(two_ranks / "ckpt")
    assert info is not None and info.step == 2 and [p.name for p in (two_ranks / "ckpt").iterdir()] == [info.path.name]
    want = one_process["info"]
    _close(load_file(str(info.path / "model.safetensors")), load_file(str(want.path / "model.safetensors")),
           atol=WEIGHTS_ATOL)
    got_opt = torch.load(info.path / "trainer" / "optimizer.pt", weights_only=True)
    want_opt = torch.load(want.path / "trainer" / "optimizer.pt", weights_only=True)
    assert got_opt["state"].keys() == want_opt["state"].keys()
    for i, state in want_opt["state"].items():
        _close(got_opt["state"][i], state, atol=WEIGHTS_ATOL)
    assert read_checkpoint(info.path).meta["method"] == "omniopd"


def _resume_then_tied(rank: int, port: int, model_dir: str, ckpt: str, tied_dir: str, out: str) -> None:
    """Second round of two ranks: (1) resume the two-rank checkpoint and step; (2) one step of a
    tied student (Qwen3-0.6B/1.7B/4B layout: lm_head IS the embedding) and its checkpoint."""
    from omniopd.train.distributed import close_process_group

    _join(rank, port)
    trainer = build_trainer(make_config(model_dir, learner={"grad_accum": 2}), resume=latest_checkpoint(ckpt))
    m = trainer.step(fixed_examples(4, seed=1))
    torch.save({"metrics": m, "after": _full_params(trainer)}, Path(out) / f"resumed{rank}.pt")
    tied = build_trainer(make_config(tied_dir))
    m = tied.step(fixed_examples(3))
    tied.save(Path(out) / "tied-ckpt", policy_version=1)
    torch.save({"metrics": m, "after": _full_params(tied)}, Path(out) / f"tied{rank}.pt")
    close_process_group()


@pytest.fixture(scope="module")
def tied_dir(tmp_path_factory) -> Path:
    from omniopd.models.tiny import make_tiny_model
    from tests.rollout.checkpoints import save_perturbed

    base = tmp_path_factory.mktemp("tied")
    return save_perturbed(make_tiny_model(base / "base"), base / "tied", seed=1, scale=0.0, tied=True)


@pytest.fixture(scope="module")
def second_round(two_ranks, tiny_model_dir, tied_dir) -> Path:
    _spawn(_resume_then_tied, tiny_model_dir, str(two_ranks / "ckpt"), str(tied_dir), str(two_ranks))
    return two_ranks


def test_two_ranks_resume_a_checkpoint_and_step_as_one_process_would(second_round, tiny_model_dir):
    # the checkpoint written by two ranks, resumed by two ranks (optimizer state cut to shards)
    # and by one process: the next update is the same
    single = build_trainer(make_config(tiny_model_dir, learner={"grad_accum": 2}),
                           resume=latest_checkpoint(second_round / "ckpt"))
    m = single.step(fixed_examples(4, seed=1))
    for r in range(WORLD):
        got = torch.load(second_round / f"resumed{r}.pt", weights_only=False)
        assert got["metrics"].step == 3 and got["metrics"].loss == pytest.approx(m.loss, rel=1e-5)
        _close(got["after"], single.models.student.state_dict(), atol=WEIGHTS_ATOL)


def test_a_tied_student_trains_tied_on_two_ranks_and_is_saved_untied(second_round, tied_dir):
    from omniopd.rollout.weights import check_untied

    single = build_trainer(make_config(str(tied_dir)))
    m = single.step(fixed_examples(3))
    want = single.models.student.state_dict()
    for r in range(WORLD):
        got = torch.load(second_round / f"tied{r}.pt", weights_only=False)
        assert got["metrics"].loss == pytest.approx(m.loss, rel=1e-5)
        _close(got["after"], want, atol=WEIGHTS_ATOL)
        torch.testing.assert_close(got["after"]["lm_head.weight"], got["after"]["model.embed_tokens.weight"])
    info = latest_checkpoint(second_round / "tied-ckpt")
    check_untied(info.path)
    saved = load_file(str(info.path / "model.safetensors"))
    torch.testing.assert_close(saved["lm_head.weight"], want["model.embed_tokens.weight"], atol=WEIGHTS_ATOL, rtol=1e-5)
