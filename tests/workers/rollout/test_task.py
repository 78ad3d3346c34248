"""Real rollout workers (`omniopd worker rollout`, hf backend, the tiny student) on real
PostgreSQL and Redis, driven by the real driver: records, weight sync, stale work, crashes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select

from db.arrays import unpack_f32, unpack_i32
from db.models import Chunk, Problem, RolloutBatch, Trajectory
from db.problem_files import ProblemRow
from db.repo_bundles import count_claimable
from db.repo_problems import import_problems
from db.repo_rollouts import rollout_status
from db.repo_runs import publish_policy_version
from db.repo_status import run_status
from omniopd.algo.entropy import token_logprobs_and_entropy
from omniopd.models.loading import load_causal_lm, load_tokenizer
from omniopd.rollout import teacher_context
from tests.rollout.checkpoints import save_perturbed
from tests.workers.conftest import wait_for
from tests.workers.rollout_support import (
    live_per_slot,
    open_batch_ids,
    queued_args,
    rollout_run,
    slot_states,
)
from workers.app import make_celery
from workers.learner.driver import Driver

pytestmark = [pytest.mark.services, pytest.mark.slow]


def start_rollout_worker(processes, store, tmp_path: Path, name: str):
    log = tmp_path / f"{name}.log"
    config_path = tmp_path / "run.yaml"
    proc = processes(["-m", "omniopd", "worker", "rollout", "--config", str(config_path)], log,
                     env={"OMP_NUM_THREADS": "1"})
    return proc, log


def wait_recorded(store, batch_ids, proc, log, timeout=120):
    def done():
        assert proc.poll() is None, f"rollout worker exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
        return not set(batch_ids) & set(open_batch_ids(store))

    wait_for(done, timeout, f"rollout batches {batch_ids} to be recorded")


def forward_scores(model, prompt_ids, completion_ids):
    """logprobs, entropies [T] of the completion from one plain full forward (no slicing)."""
    ids = torch.tensor([[*prompt_ids, *completion_ids]])
    with torch.no_grad():
        logits = model(ids).logits[0]  # [P + T, V]
    return token_logprobs_and_entropy(logits[len(prompt_ids) - 1 : -1], torch.tensor(completion_ids))


def check_trajectories(store, ids, model, tokenizer, version, *, chunks_m, chunk_c):
    """Stored trajectories are consistent: arrays, entropies vs a separate forward, chunks."""
    with store.sessions.begin() as s:
        rows = s.scalars(select(Trajectory).where(Trajectory.id.in_(ids)).order_by(Trajectory.id)).all()
        questions = dict(s.execute(select(Trajectory.problem_id, Trajectory.problem_id)).all())
        for t in rows:
            assert t.policy_version == version and t.entropy_source == "exact"
            tokens = unpack_i32(t.completion_token_ids).tolist()
            logprobs, entropies = unpack_f32(t.logprobs), unpack_f32(t.entropies)
            assert len(tokens) == len(logprobs) == len(entropies) == t.n_completion_tokens >= 1
            assert t.completion_text == tokenizer.decode(tokens, skip_special_tokens=True)
            lp, ent = forward_scores(model, unpack_i32(t.prompt_token_ids).tolist(), tokens)
            assert torch.allclose(torch.tensor(entropies), ent, atol=1e-5, rtol=0)
            assert torch.allclose(torch.tensor(logprobs), lp, atol=1e-5, rtol=0)
            question = s.scalar(select(func.min(Trajectory.problem_id)).where(Trajectory.id == t.id))
            assert question in questions
            chunks = s.scalars(select(Chunk).where(Chunk.trajectory_id == t.id).order_by(Chunk.idx)).all()
            assert 1 <= len(chunks) <= chunks_m
            previous_end = 0
            for c in chunks:
                assert previous_end <= c.start < c.end <= min(c.start + chunk_c, len(tokens))
                assert c.state == "pending" and c.n_target == 3
                assert c.student_text == tokenizer.decode(tokens[c.start : c.end], skip_special_tokens=True)
                assert c.anchor_entropy == pytest.approx(float(entropies[c.start]), abs=1e-6)
                prefix = c.prefix_text if c.prefix_text is not None else t.completion_text[: c.char_start]
                want = teacher_context(tokenizer, "", "table7", tokens, c.start).prefix
                assert prefix == want
                previous_end = c.end
            # Peak placement: the first-chosen anchor is the trajectory's highest entropy.
            assert max(c.anchor_entropy for c in chunks) == pytest.approx(float(entropies.max()), abs=1e-6)
            assert t.meta["teacher_prompt"].startswith("Solve the following math problem")


def test_rollout_worker_records_trajectories_syncs_weights_drops_stale_work_and_stops_on_a_bad_checkpoint(
    tmp_path, postgres_url, redis_url, redis_prefix, processes, tiny_model_dir
):
    store = rollout_run(
        tmp_path, 4, store={"url": postgres_url},
        broker={"mode": "redis", "url": redis_url, "key_prefix": redis_prefix, "visibility_timeout_s": 600},
        student={"path": tiny_model_dir, "device": "cpu"},
        rollout={"backend": "hf", "max_new_tokens": 16, "max_prompt_tokens": 160, "batch_problems": 2,
                 "samples_per_prompt": 2, "entropy_slice_tokens": 5},
        chunking={"m": 2, "c": 4}, estimator={"n": 3},
        learner={"pipeline_depth": 1, "batch_size": 2, "checkpoint_every": 100, "max_policy_lag": 1},
    )
    with store.sessions.begin() as s:  # one problem whose prompt is too long for the student
        import_problems(s, rows=[ProblemRow(1, "long", "step " * 200, "1", None, "train", None, {}, "long-hash")])
    tokenizer = load_tokenizer(tiny_model_dir)
    driver = Driver(app=make_celery(store.config, broker_url=redis_url), sessions=store.sessions,
                    config=store.config, run_id=store.run_id)
    proc, log = start_rollout_worker(processes, store, tmp_path, "worker")

    # v0: the first batch, end to end; audits queued after the commit, one per trajectory.
    driver.tick(trained_version=0)
    (first,) = open_batch_ids(store)
    wait_recorded(store, [first], proc, log)
    with store.sessions.begin() as s:
        v0_ids = list(s.scalars(select(Trajectory.id).where(Trajectory.state == "generated")))
    # Sent after the commit (so a moment after the rows are visible), never before it.
    audits = wait_for(lambda: (a := queued_args(redis_url, redis_prefix, "audits.emu")) and len(a) >= len(v0_ids) and a,
                      30, "the audit messages")
    assert sorted(a[0] for a in audits) == sorted(v0_ids) and len(v0_ids) in (2, 4)  # the long prompt is refused
    check_trajectories(store, v0_ids, load_causal_lm(tiny_model_dir, dtype="float32", device="cpu"), tokenizer, 0,
                       chunks_m=2, chunk_c=4)

    # A new version is published: the next batch reloads, verifies by the probe, and uses it.
    v1 = save_perturbed(tiny_model_dir, tmp_path / "ckpt" / "v1", seed=1)
    with store.sessions.begin() as s:
        publish_policy_version(s, run_id=store.run_id, version=1, path=str(v1), step=100)
    driver.tick(trained_version=1)
    (second,) = open_batch_ids(store)
    wait_recorded(store, [second], proc, log)
    with store.sessions.begin() as s:
        batch = s.get(RolloutBatch, second)
        v1_ids = list(s.scalars(select(Trajectory.id).where(Trajectory.policy_version == 1,
                                                            Trajectory.state == "generated")))
        status = rollout_status(s, run_id=store.run_id)
    reload = batch.meta["reload"]
    assert (reload["version"], reload["method"]) == (1, "state_dict") and reload["max_abs_diff"] <= 1e-3
    assert status.last_reload == reload and batch.reloaded_version == 1 and "weight sync v1" in log.read_text()
    check_trajectories(store, v1_ids, load_causal_lm(str(v1), dtype="float32", device="cpu"), tokenizer, 1,
                       chunks_m=2, chunk_c=4)

    # v2 with max lag 1: the v0 trajectories are two versions old -> dropped, counted, re-sampled.
    v2 = save_perturbed(tiny_model_dir, tmp_path / "ckpt" / "v2", seed=2)
    with store.sessions.begin() as s:
        publish_policy_version(s, run_id=store.run_id, version=2, path=str(v2), step=200)
    report = driver.tick(trained_version=2)
    assert report.dropped_stale == len(v0_ids) and report.resampled_slots == len(v0_ids)
    while not report.exhausted:
        wait_recorded(store, open_batch_ids(store), proc, log)
        with store.sessions.begin() as s:  # stand-in for the audit + learner: everything consumed
            s.execute(Trajectory.__table__.update().where(Trajectory.state.in_(("generated", "ready")))
                      .values(state="consumed", consumed_step=1))
        report = driver.tick(trained_version=2)
    slots = slot_states(store)
    for key in slots:
        if slots[key][0][2] == 0 and slots[key][0][1] == "dropped":
            assert slots[key] == [(0, "dropped", 0), (1, "consumed", 2)]  # re-sampled with the newest policy
    with store.sessions.begin() as s:
        status = run_status(s, run_id=store.run_id, run_name="wtest", run_status="created")
        refused = s.scalars(select(Trajectory.drop_detail).where(Trajectory.drop_reason == "prompt_too_long")).all()
        long_id = s.scalar(select(Problem.id).where(Problem.uid == "long"))
    # Every slot of the 5 problems x 2 samples has exactly one trajectory for the learner,
    # except the refused long prompt's, which are dropped with their reason: none lost, none twice.
    live = live_per_slot(store)
    assert len(slots) == 5 * 2 and all(n == (0 if key[0] == long_id else 1) for key, n in live.items())
    assert status.dropped == {"prompt_too_long": 2, "stale_policy": len(v0_ids)}
    assert all("rollout.max_prompt_tokens = 160" in d for d in refused)

    # A tied checkpoint (vLLM would reload it silently wrong) stops the worker; the batch waits.
    # (The v1 bundles are made unconsumed again so that v3 makes them stale and re-sampled.)
    v3 = save_perturbed(tiny_model_dir, tmp_path / "ckpt" / "v3", seed=3, tied=True)
    with store.sessions.begin() as s:
        publish_policy_version(s, run_id=store.run_id, version=3, path=str(v3), step=300)
        s.execute(Trajectory.__table__.update().where(Trajectory.policy_version == 1, Trajectory.state == "consumed")
                  .values(state="ready", consumed_step=None))
    assert driver.tick(trained_version=3).dropped_stale > 0  # v1 < 3 - 1: stale, re-sampled under v3
    assert proc.wait(120) == 3, log.read_text()[-3000:]
    text = log.read_text()
    assert "stopping this rollout worker: weight sync to policy v3 failed" in text and "tie_word_embeddings" in text
    (waiting,) = open_batch_ids(store)
    wait_for(lambda: queued_args(redis_url, redis_prefix, "rollouts") == [[waiting]], 30,
             "the batch to be back in the queue for a healthy worker")


def test_rollout_worker_killed_mid_batch_is_redone_and_no_duplicate_reaches_the_learner(
    tmp_path, postgres_url, redis_url, redis_prefix, processes, tiny_model_dir
):
    store = rollout_run(
        tmp_path, 4, store={"url": postgres_url},
        # a 3 s visibility timeout: the dead worker's unacknowledged message comes back quickly
        broker={"mode": "redis", "url": redis_url, "key_prefix": redis_prefix, "visibility_timeout_s": 3},
        student={"path": tiny_model_dir, "device": "cpu"},
        rollout={"backend": "hf", "max_new_tokens": 200, "max_prompt_tokens": 160, "batch_problems": 4,
                 "samples_per_prompt": 2, "reissue_after_s": 1},
        loss={"method": "opd_whitebox", "whitebox_teacher": tiny_model_dir},  # no audits: ready at once
        learner={"pipeline_depth": 1, "batch_size": 8, "checkpoint_every": 100},
    )
    driver = Driver(app=make_celery(store.config, broker_url=redis_url), sessions=store.sessions,
                    config=store.config, run_id=store.run_id)
    first, log1 = start_rollout_worker(processes, store, tmp_path, "first")
    driver.tick(trained_version=0)
    (batch_id,) = open_batch_ids(store)
    wait_for(lambda: "rollout engine (hf) started" in log1.read_text(), 120, "the first worker to start generating")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    with store.sessions.begin() as s:
        assert s.scalar(select(func.count()).select_from(Trajectory)) == 0, "the batch finished before the kill"
    report = driver.tick(trained_version=0)  # also past reissue_after_s: the driver sends a duplicate
    assert report.resent_batches == 1
    second, log2 = start_rollout_worker(processes, store, tmp_path, "second")
    wait_recorded(store, [batch_id], second, log2, timeout=180)
    # Both the redelivered message and the driver's duplicate reach the second worker;
    # whichever runs second finds every slot filled and writes nothing.
    wait_for(lambda: not queued_args(redis_url, redis_prefix, "rollouts"), 60, "the duplicate to be consumed")
    with store.sessions.begin() as s:
        total = s.scalar(select(func.count()).select_from(Trajectory))
        claimable = count_claimable(s, run_id=store.run_id)
    assert total == claimable == 4 * 2 and set(live_per_slot(store).values()) == {1}
    assert log2.read_text().count(f"rollout batch {batch_id}: 8 trajectories (8 new)") == 1
    assert second.poll() is None
