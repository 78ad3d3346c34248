"""Checkpoints: HF layout that transformers (and the rollout weight sync) loads untied,
exact resume of weights + optimizer + schedule + RNG, atomic writes, LoRA merged weights."""

from __future__ import annotations

import json
import os

import pytest
import torch

from omniopd.models.loading import load_causal_lm
from omniopd.rollout.weights import check_untied
from omniopd.train import (
    build_trainer,
    clean_partial,
    latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
)
from omniopd.train.checkpoint import checkpoint_path, merged_lora_state, read_checkpoint
from tests.train.conftest import fixed_examples, make_config


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def _base(trainer):
    return trainer.models.base_model()


def test_checkpoint_loads_in_transformers_untied_with_the_trained_weights(tiny_model_dir, tmp_path, examples):
    trainer = build_trainer(make_config(tiny_model_dir))
    trainer.step(examples)
    info = trainer.save(tmp_path, policy_version=1)
    assert info.path == checkpoint_path(tmp_path, 1) and info.step == 1 and info.policy_version == 1
    config = json.loads((info.path / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    check_untied(info.path)  # what rollout workers check before reloading
    assert (info.path / "tokenizer.json").is_file() and (info.path / "generation_config.json").is_file()
    loaded = load_causal_lm(str(info.path), dtype="float32", device="cpu")
    ids = list(examples[0].prompt_ids) + list(examples[0].completion_ids)
    torch.testing.assert_close(_logits(loaded, ids), _logits(trainer.models.student, ids), atol=1e-5, rtol=1e-5)
    before = load_causal_lm(tiny_model_dir, dtype="float32", device="cpu")
    assert not torch.allclose(_logits(before, ids), _logits(loaded, ids))


def test_a_tied_student_trains_tied_and_is_saved_untied(tmp_path, examples):
    from tests.rollout.checkpoints import save_perturbed

    tied_dir = save_perturbed(_tiny(tmp_path), tmp_path / "tied", seed=1, scale=0.0, tied=True)
    trainer = build_trainer(make_config(str(tied_dir)))
    student = trainer.models.student
    assert trainer.models.student_tied and student.lm_head.weight is student.get_input_embeddings().weight
    trainer.step(examples)
    info = trainer.save(tmp_path / "ckpt", policy_version=1)
    check_untied(info.path)
    loaded = load_causal_lm(str(info.path), dtype="float32", device="cpu")
    assert loaded.lm_head.weight is not loaded.get_input_embeddings().weight
    torch.testing.assert_close(loaded.lm_head.weight, student.get_input_embeddings().weight)
    ids = list(examples[1].prompt_ids) + list(examples[1].completion_ids)
    torch.testing.assert_close(_logits(loaded, ids), _logits(student, ids), atol=1e-5, rtol=1e-5)
    resumed = build_trainer(make_config(str(tied_dir)), resume=info)
    r = resumed.models.student
    assert r.lm_head.weight is r.get_input_embeddings().weight  # still one tied parameter
    torch.testing.assert_close(_logits(r, ids), _logits(student, ids), atol=1e-6, rtol=1e-6)


def _tiny(tmp_path):
    from omniopd.models.tiny import make_tiny_model

    return make_tiny_model(tmp_path / "base")


def test_resuming_from_a_checkpoint_continues_exactly(tiny_model_dir, tmp_path):
    config = make_config(tiny_model_dir, learner={"warmup_steps": 2, "schedule": "cosine", "max_steps": 6})
    batches = [fixed_examples(2, seed=s) for s in range(4)]
    straight = build_trainer(config)
    for batch in batches[:2]:
        straight.step(batch)
    info = straight.save(tmp_path, policy_version=3)
    torch.manual_seed(1234)  # the RNG state must come back from the checkpoint, not from here
    expected = [straight.step(batch).loss for batch in batches[2:]]
    resumed = build_trainer(config, resume=info)
    assert resumed.steps_done == 2
    got = [resumed.step(batch).loss for batch in batches[2:]]
    assert got == pytest.approx(expected, abs=1e-6)
    for (n, a), (_, b) in zip(straight.models.student.named_parameters(), resumed.models.student.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=n)
    assert resumed.scheduler.last_epoch == straight.scheduler.last_epoch == 4


def test_checkpoints_are_atomic_listed_in_order_and_pruned(tiny_model_dir, tmp_path):
    trainer = build_trainer(make_config(tiny_model_dir))
    for step in range(1, 4):
        trainer.step(fixed_examples(1, seed=step))
        trainer.save(tmp_path, policy_version=step)
    partial = tmp_path / f".tmp-step-00000009-{os.getpid()}"  # a save killed before its rename
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    assert [c.step for c in list_checkpoints(tmp_path)] == [1, 2, 3]
    assert latest_checkpoint(tmp_path).step == 3
    assert clean_partial(tmp_path) == [partial] and not partial.exists()
    assert prune_checkpoints(tmp_path, keep=2) == [checkpoint_path(tmp_path, 1)]
    assert [c.step for c in list_checkpoints(tmp_path)] == [2, 3]
    with pytest.raises(FileExistsError):
        trainer.save(tmp_path, policy_version=4)  # step 3 is already checkpointed
    with pytest.raises(ValueError, match="not a complete OmniOPD checkpoint"):
        read_checkpoint(tmp_path / "missing")
    assert latest_checkpoint(tmp_path / "nothing-here") is None


def test_lora_checkpoint_holds_merged_weights_and_resumes_from_its_adapters(tiny_model_dir, tmp_path, examples):
    config = make_config(tiny_model_dir, learner={"lora": {"enabled": True, "r": 4}, "lr": 1e-2})
    trainer = build_trainer(config)
    for _ in range(2):
        trainer.step(examples)
    info = trainer.save(tmp_path, policy_version=1)
    assert info.lora and (info.adapter_dir / "adapter_model.safetensors").is_file()
    check_untied(info.path)
    merged = load_causal_lm(str(info.path), dtype="float32", device="cpu")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    ids = list(examples[2].prompt_ids) + list(examples[2].completion_ids)
    torch.testing.assert_close(_logits(merged, ids), _logits(trainer.models.student, ids), atol=1e-5, rtol=1e-5)
    state, _ = merged_lora_state(trainer.models.student)  # computed without touching the weights
    assert set(state) == {n for n, _ in merged.named_parameters()}
    resumed = build_trainer(config, resume=info)
    torch.testing.assert_close(_logits(resumed.models.student, ids), _logits(merged, ids), atol=1e-5, rtol=1e-5)
    with resumed.models.reference_model() as ref:  # the reference is still the base model
        base = load_causal_lm(tiny_model_dir, dtype="float32", device="cpu")
        torch.testing.assert_close(_logits(ref, ids), _logits(base, ids), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="must match to resume"):
        build_trainer(make_config(tiny_model_dir), resume=info)


def test_damaged_checkpoints_are_set_aside_and_the_newest_intact_one_resumed(tiny_model_dir, tmp_path):
    from omniopd.train.checkpoint import STATE_FILE, resume_point, verify_checkpoint

    config = make_config(tiny_model_dir)
    trainer = build_trainer(config)
    for step in range(1, 5):
        trainer.step(fixed_examples(1, seed=step))
        info = trainer.save(tmp_path, policy_version=step)
        assert verify_checkpoint(info.path) is None  # verified when written, and intact
    def cut(path, keep):
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
    cut(checkpoint_path(tmp_path, 4) / "model.safetensors", 0.5)
    cut(checkpoint_path(tmp_path, 3) / "trainer" / "optimizer.pt", 0.9)
    (checkpoint_path(tmp_path, 2) / STATE_FILE).write_text("")
    assert latest_checkpoint(tmp_path).step == 1  # no traceback: the damaged ones are skipped
    resumed, damaged = resume_point(tmp_path)
    assert resumed.step == 1 and [d.path.name for d in damaged] == [f"step-0000000{s}" for s in (4, 3, 2)]
    reasons = [d.reason for d in damaged]
    assert reasons[0].startswith("model.safetensors is ") and "were written" in reasons[0]
    assert reasons[1].startswith("trainer/optimizer.pt is ")
    assert reasons[2].startswith("omniopd_trainer.json is missing or unreadable")
    assert all(d.moved_to.is_dir() and not d.path.exists() for d in damaged)
    assert [c.step for c in list_checkpoints(tmp_path)] == [1]
    assert build_trainer(config, resume=resumed).steps_done == 1
    trainer = build_trainer(config, resume=resumed)
    trainer.step(fixed_examples(1, seed=2))
    assert trainer.save(tmp_path, policy_version=2).step == 2  # the lost step's name is free again


def test_a_checkpoint_without_a_file_list_is_still_checked_by_its_headers(tiny_model_dir, tmp_path):
    from omniopd.train.checkpoint import STATE_FILE, verify_checkpoint

    trainer = build_trainer(make_config(tiny_model_dir))
    trainer.step(fixed_examples(1, seed=1))
    info = trainer.save(tmp_path, policy_version=1)
    state = json.loads((info.path / STATE_FILE).read_text())
    del state["files"]  # as written before the list existed
    (info.path / STATE_FILE).write_text(json.dumps(state))
    assert verify_checkpoint(info.path) is None
    weights = info.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert "truncated" in verify_checkpoint(info.path)
