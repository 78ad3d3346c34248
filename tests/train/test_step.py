"""The learner step: loss goes down, ablations do what they say, accumulation is exact."""

from __future__ import annotations

import pytest
import torch

from omniopd.objectives import LossSettings, OmniOPD, make_objective
from omniopd.train import AuditedChunk, Trainer, TrainExample, build_trainer
from omniopd.train.models import load_policy_models
from omniopd.train.optim import lr_multiplier
from omniopd.train.settings import model_spec, train_settings
from omniopd.train.step import accumulate_gradients, build_rows
from tests.train.conftest import fixed_examples, make_config


def test_repeated_steps_on_a_fixed_batch_reduce_the_omniopd_loss(tiny_model_dir, examples):
    trainer = build_trainer(make_config(tiny_model_dir))
    losses = [trainer.step(examples).loss for _ in range(8)]
    assert losses[-1] < losses[0] - 0.05, losses
    assert trainer.steps_done == 8


def test_step_metrics_report_loss_parts_kl_proxies_tokens_and_timings(tiny_model_dir, examples):
    trainer = build_trainer(make_config(tiny_model_dir, learner={"grad_accum": 2}))
    m = trainer.step(examples)
    assert m.step == 1 and m.method == "omniopd" and m.examples == 4 and m.micro_batches == 2
    assert m.loss == pytest.approx(m.parts["chunk_loss"] + m.parts["kl_term"])
    assert m.kl is not None and m.kl == 0.0  # student == reference before the first update
    assert m.parts["chunks"] == 8 and 0 < m.parts["proxy_min"] <= m.parts["proxy_mean"] <= m.parts["proxy_max"] <= 1
    assert m.parts["audited_tokens"] == 4 * (6 + 7)
    assert m.loss_tokens == sum(len(e.completion_ids) for e in examples)
    assert m.forward_tokens == sum(len(e.prompt_ids) + len(e.completion_ids) - 1 for e in examples)
    assert m.timings.total_s >= m.timings.forward_s > 0 and m.grad_norm > 0 and m.lr == pytest.approx(1e-3)
    m2 = trainer.step(examples)
    assert m2.kl > 0  # the student moved away from the frozen reference
    flat = m2.as_dict()
    assert flat["step"] == 2 and "proxy_mean" in flat and "tokens_per_s" in flat and "backward_s" in flat


def test_beta_zero_drops_the_kl_term_and_never_loads_the_reference(tiny_model_dir, tmp_path, examples):
    config = make_config(tiny_model_dir, loss={"beta": 0.0}, reference={"path": str(tmp_path / "no-such-model")})
    assert model_spec(config).reference_path is None
    trainer = build_trainer(config)  # would fail if it tried to load the missing reference
    assert trainer.models.reference is None and not trainer.models.reference_needed
    m = trainer.step(examples)
    assert m.kl is None and m.parts["kl_term"] == 0.0
    assert m.loss == pytest.approx(m.parts["chunk_loss"])


def test_alpha_zero_makes_the_proxy_the_frequentist_ratio(tiny_model_dir, examples):
    for alpha, equal in ((0.0, True), (1.0, False)):
        trainer = build_trainer(make_config(tiny_model_dir, estimator={"alpha": alpha}))
        rows = [r for e in examples for r in OmniOPD().rows(e, None)]
        micro = OmniOPD().micro_loss(trainer.models, rows, trainer.settings.loss)
        chunks = [c for e in examples for c in e.chunks]
        ratios = [c.k_sem / c.n for c in chunks]
        assert micro.stats.get("frequentist_sum") == pytest.approx(sum(ratios))
        same = micro.stats.get("proxy_sum") == pytest.approx(sum(ratios))
        assert same is equal
        if equal:
            assert micro.stats.mins["proxy"] == pytest.approx(min(ratios))
            assert micro.stats.maxs["proxy"] == pytest.approx(max(ratios))


def _grads(trainer: Trainer, examples, groups: int) -> dict[str, torch.Tensor]:
    s = trainer.settings
    trainer.optimizer.zero_grad(set_to_none=True)
    micro = build_rows(trainer.objective, examples, trainer.models.tokenizer, groups)
    assert len(micro) == groups
    accumulate_gradients(trainer.objective, trainer.models, micro, s.loss, s.normalisation)
    return {n: p.grad.clone() for n, p in trainer.models.student.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("normalisation", ["sum", "sequence", "token"])
def test_gradient_accumulation_equals_the_full_batch(tiny_model_dir, examples, normalisation):
    trainer = build_trainer(make_config(tiny_model_dir, loss={"normalisation": normalisation}))
    trainer.step(examples)  # move away from the reference so the KL term has a gradient too
    full = _grads(trainer, examples, 1)
    for groups in (2, 4):
        accumulated = _grads(trainer, examples, groups)
        assert full.keys() == accumulated.keys()
        for name in full:
            torch.testing.assert_close(accumulated[name], full[name], atol=1e-6, rtol=1e-4, msg=name)


def test_examples_without_audited_chunks_are_all_unaudited_tokens(tiny_model_dir):
    # chunks that ended skipped_budget / failed are not in TrainExample.chunks (workers.learner.loop)
    bare = [TrainExample(k, e.prompt_ids, e.completion_ids) for k, e in enumerate(fixed_examples(2))]
    m = build_trainer(make_config(tiny_model_dir)).step(bare)
    assert m.parts["audited_tokens"] == 0 and m.parts["chunks"] == 0
    assert m.parts["unaudited_tokens"] == m.loss_tokens and m.parts["chunk_loss"] == 0.0


def test_sft_on_continuations_trains_on_the_retokenised_teacher_text_after_the_student_prefix(tiny_model_dir, examples):
    trainer = build_trainer(make_config(tiny_model_dir, loss={"method": "sft", "beta": 0.1}))
    assert trainer.models.reference is None and trainer.needs_teacher_text
    tok = trainer.models.tokenizer
    rows = trainer.objective.rows(examples[0], tok)
    assert len(rows) == 4  # two chunks x two continuations
    chunk = examples[0].chunks[1]
    assert list(rows[2].context) == [*examples[0].prompt_ids, *examples[0].completion_ids[: chunk.start]]
    assert list(rows[2].response) == tok("Answer: 4", add_special_tokens=False)["input_ids"]
    losses = [trainer.step(examples).loss for _ in range(4)]
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="teacher texts"):
        trainer.objective.rows(TrainExample(9, [1], [2, 3], (AuditedChunk(0, 1, 1.0, 2),)), tok)


def test_sft_on_given_trajectories_trains_on_the_whole_completion(tiny_model_dir, examples):
    trainer = build_trainer(make_config(tiny_model_dir, loss={"method": "sft", "sft_source": "trajectories"}))
    assert not trainer.needs_teacher_text
    m = trainer.step(examples)
    assert m.parts["teacher_tokens"] == sum(len(e.completion_ids) for e in examples)


def test_whitebox_opd_is_zero_against_itself_and_pulls_the_student_to_another_teacher(tiny_model_dir, tmp_path, examples):
    from tests.rollout.checkpoints import save_perturbed

    same = build_trainer(make_config(tiny_model_dir, loss={"method": "opd_whitebox", "whitebox_teacher": tiny_model_dir}))
    assert same.models.teacher is not None and same.models.reference is None
    assert same.step(examples).loss == pytest.approx(0.0, abs=1e-6)
    teacher = save_perturbed(tiny_model_dir, tmp_path / "teacher", seed=3, scale=0.2)
    trainer = build_trainer(make_config(tiny_model_dir, loss={"method": "opd_whitebox", "whitebox_teacher": str(teacher)}))
    steps = [trainer.step(examples) for _ in range(4)]
    assert steps[0].parts["forward_kl"] > 0 and steps[0].parts["reverse_kl"] > 0
    assert steps[-1].loss < steps[0].loss


def test_whitebox_opd_refuses_a_teacher_with_another_tokenizer(tiny_model_dir, tmp_path):
    from omniopd.models.tiny import TinySpec, default_corpus, make_tiny_model

    other = make_tiny_model(tmp_path / "other", TinySpec(vocab_size=600), corpus=default_corpus(seed=7)[:500])
    config = make_config(tiny_model_dir, loss={"method": "opd_whitebox", "whitebox_teacher": str(other)})
    with pytest.raises(ValueError, match="shared tokenizer"):
        load_policy_models(model_spec(config))


def test_lora_reference_is_the_student_with_adapters_disabled(tiny_model_dir, examples):
    config = make_config(tiny_model_dir, learner={"lora": {"enabled": True, "r": 4}, "lr": 1e-2})
    trainer = build_trainer(config)
    models = trainer.models
    assert models.lora and models.reference is None and models.reference_needed  # no second copy
    trainable = {n for n, p in models.student.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    frozen_before = {n: p.detach().clone() for n, p in models.student.named_parameters() if not p.requires_grad}
    assert trainer.step(examples).kl == pytest.approx(0.0, abs=1e-7)  # adapters start at B = 0
    assert trainer.step(examples).kl > 0
    for n, p in models.student.named_parameters():
        if n in frozen_before:
            assert torch.equal(p, frozen_before[n]), n


def test_learning_rate_warms_up_then_follows_the_schedule():
    kw = {"warmup_steps": 4, "total_steps": 14}
    assert [lr_multiplier(s, schedule="constant", **kw) for s in range(6)] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
    assert lr_multiplier(4, schedule="cosine", **kw) == 1.0
    assert lr_multiplier(9, schedule="cosine", **kw) == pytest.approx(0.5)
    assert lr_multiplier(14, schedule="linear", **kw) == 0.0
    assert lr_multiplier(40, schedule="cosine", **kw) == pytest.approx(0.0)


def test_settings_come_from_the_config_and_objectives_from_the_registry(tiny_model_dir):
    config = make_config(tiny_model_dir, estimator={"alpha": 0.5}, loss={"beta": 0.2, "kl_vocab_slice": 64})
    s = train_settings(config, device="cpu")
    assert s.loss == LossSettings(beta=0.2, alpha=0.5, token_slice=512, vocab_slice=64, autocast=None,
                                  normalisation="token")
    assert isinstance(make_objective("omniopd"), OmniOPD)
    with pytest.raises(ValueError, match="expected one of"):
        make_objective("ppo")


def test_a_bf16_autocast_step_keeps_fp32_master_weights_and_matches_fp32(tiny_model_dir, examples):
    # the GPU recipe (fp32 master weights, bf16 autocast, bf16 frozen reference), on CPU
    from dataclasses import replace

    from omniopd.train.models import load_policy_models

    config = make_config(tiny_model_dir, reference={"path": tiny_model_dir, "dtype": "bfloat16"})
    fp32 = build_trainer(make_config(tiny_model_dir)).step(examples)
    models = load_policy_models(model_spec(config))
    assert models.reference.dtype == torch.bfloat16
    settings = train_settings(config, device="cpu")
    trainer = Trainer(models, replace(settings, loss=replace(settings.loss, autocast=torch.bfloat16)))
    m = trainer.step(examples)
    assert all(p.dtype == torch.float32 for p in trainer.params)
    assert m.loss == pytest.approx(fp32.loss, rel=0.05) and m.kl >= 0


def test_lora_is_refused_under_several_processes_before_anything_loads(monkeypatch, tiny_model_dir):
    from omniopd.train.distributed import is_main_process

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    config = make_config(tiny_model_dir, learner={"lora": {"enabled": True}})
    with pytest.raises(ValueError, match="LoRA training runs as one process"):
        load_policy_models(model_spec(config))
