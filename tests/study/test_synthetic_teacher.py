"""The study on a synthetic teacher whose chunk probability is known by construction.

The teacher is a real OpenAI-compatible server (the provider emulator) whose continuation
of a prefix ending in `p=<p>|` is the chunk text "yes" with probability p and "no"
otherwise. So the oracle probability of the chunk "yes" is p exactly, and with phi = exact
match mu_c = p (Eq. 9): the frequentist ratio is unbiased for p with variance p(1-p)/N and
the Bayesian proxy has the variance and MSE of Theorem 4.1(c), Eq. 13.
"""

from __future__ import annotations

import asyncio
import math
import random
import re

import numpy as np
import pytest

from omniopd.algo.estimator import proxy_mse
from omniopd.study.estimator_study import StudySettings, analyse
from omniopd.study.oracle import OracleScore
from omniopd.study.sampling import StudySamplingError, sample_continuations
from omniopd.study.student_chunks import StudyChunk
from omniopd.teachers.client import RetryPolicy
from omniopd.teachers.emulator import EmulatorConfig, EmulatorThread
from omniopd.teachers.providers import PROVIDERS

PATTERN = re.compile(r"p=([0-9.]+)\|$")


def bernoulli_teacher(prompt_text: str, n: int, max_tokens: int, temperature, seed) -> list[str]:
    p = float(PATTERN.search(prompt_text).group(1))
    rng = random.Random(seed)
    return ["yes" if rng.random() < p else "no" for _ in range(n)]


def chunks_with(probabilities) -> list[StudyChunk]:
    return [StudyChunk(i, f"q{i}", "Say yes or no.", f"p={p:.4f}|", "yes", prior=0.5, tokens=1)
            for i, p in enumerate(probabilities)]


def sample(url: str, chunks, n: int, *, model: str = "synthetic", seed: int = 0):
    client = PROVIDERS["openai_compat"](model=model, base_url=f"{url}/v1", api_key=None, mode="raw",
                                       retry=RetryPolicy(max_retries=1, backoff_base_s=0.01, backoff_max_s=0.02),
                                       timeout_s=10.0)

    async def go():
        async with client:
            return await sample_continuations(client, chunks, n, max_new_tokens_factor=2.0, concurrency=8, seed=seed)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def server():
    with EmulatorThread(EmulatorConfig(provider="openai_compat", models=["synthetic"]), bernoulli_teacher) as emu:
        yield emu


def test_study_recovers_a_known_chunk_probability(server):
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, size=300)
    chunks = chunks_with(p)
    samples = sample(server.url, chunks, 20)
    oracle = [OracleScore([math.log(round(x, 4))]) for x in p]  # one "token": normalised = sequence = p
    result = analyse(chunks, oracle, samples, StudySettings(chunks=300, ns=(10, 20), alpha=1.0, phis=("exact",),
                                                            cut="chars", resamples=300), log=lambda m: None)
    for row in (r for r in result.rows if r.target == "normalised"):
        # Unbiased: the mean of k_sem/N is the mean of p within 4 standard errors (about 0.03 at N = 10).
        tolerance = 4 * math.sqrt(float(np.mean(p * (1 - p))) / row.n / len(p))
        assert abs(row.mean_freq - result.mean_oracle["normalised"]) < tolerance
        # Its MSE against the true p is the binomial variance mean(pq)/N, within 4 standard errors (the
        # squared error of one chunk has variance mu_4 - (pq/N)^2, mu_4 = pq(1 + 3(N-2)pq)/N^3).
        pq = p * (1 - p)
        expected = float(np.mean(pq)) / row.n
        mu4 = pq * (1 + 3 * (row.n - 2) * pq) / row.n**3
        assert abs(row.freq.mse.value - expected) < 4 * math.sqrt(float(np.sum(mu4 - (pq / row.n) ** 2))) / len(p)
        assert row.freq.pearson.value > (0.75 if row.n == 10 else 0.85)
        # The prior 0.5 is close to the mean of p, so shrinking towards it lowers the MSE (Eq. 13).
        assert row.bayes.mse.value < row.freq.mse.value


def test_bayesian_variance_and_mse_match_theorem_4_1(server):
    n, alpha, prior, p, k = 10, 1.0, 0.5, 0.3, 400
    chunks = [StudyChunk(i, "q", "Say yes or no.", f"p={p}|", "yes", prior=prior, tokens=1) for i in range(k)]
    samples = sample(server.url, chunks, n, seed=7)
    hits = np.array([[s == "yes" for s in texts] for texts in samples], dtype=float)  # [K, N]: phi = exact
    freq = hits.sum(axis=1) / n
    bayes = (hits.sum(axis=1) + alpha * prior) / (n + alpha)  # Eq. 5
    sigma2 = p * (1 - p)  # Var of phi under the teacher
    theory_var = n * sigma2 / (n + alpha) ** 2  # Theorem 4.1(c)
    # The sample variance of K draws has relative standard error about sqrt(2 / K) = 7%; allow 4 of them.
    assert bayes.var(ddof=1) == pytest.approx(theory_var, rel=0.28)
    assert bayes.var(ddof=1) == pytest.approx((n / (n + alpha)) ** 2 * freq.var(ddof=1), rel=1e-9)
    assert np.mean((bayes - p) ** 2) == pytest.approx(proxy_mse(n, alpha, sigma2, p, prior), rel=0.28)  # Eq. 13


def test_a_teacher_refusal_stops_the_study_naming_the_chunk(server):
    with pytest.raises(StudySamplingError, match=r"chunk 0 \(problem q0\): the teacher call failed: .*404"):
        sample(server.url, chunks_with([0.5]), 4, model="not-served")


def test_every_sample_call_is_in_the_ledger_and_the_cap_stops_the_study(server, tmp_path):
    """The study's teacher calls are accounted like a run's: one ledger row per HTTP attempt under
    the study's run, spend within the cap, and a cap too small stops the study with its message."""
    from db.migrate import upgrade
    from db.models import RUN_SCOPE
    from db.repo_budget import budgets
    from db.repo_runs import open_run
    from db.session import make_engine, make_session_factory
    from omniopd.teachers.pricing import Price
    from workers.audit.budget_guard import StoreBudgetGuard

    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    sessions = make_session_factory(engine)
    price = Price(input=1.0, cached_input=0.1, cache_write=1.0, output=10.0)  # USD per million tokens
    client = PROVIDERS["openai_compat"](model="synthetic", base_url=f"{server.url}/v1", api_key=None, mode="raw",
                                       timeout_s=10.0)

    def run_study(run_name: str, cap_micros: int | None, chunks):
        with sessions.begin() as session:
            run_id = open_run(session, name=run_name, config={}, base_model_path="-", provider_caps={"t": cap_micros},
                              run_cap=None).id

        async def go():
            async with client:
                return await sample_continuations(
                    client, chunks, 5, max_new_tokens_factor=2.0, concurrency=4, seed=0, price=price,
                    make_guard=lambda c: StoreBudgetGuard(sessions, run_id, "t", None, wait_s=5.0))

        return run_id, go

    run_id, go = run_study("study-a", None, chunks_with([0.5] * 12))
    assert len(asyncio.run(go())) == 12
    with sessions.begin() as session:
        from sqlalchemy import func, select

        from db.models import TeacherCall

        rows = session.scalar(select(func.count()).select_from(TeacherCall).where(TeacherCall.run_id == run_id))
        spent = {b.provider: b.spent for b in budgets(session, run_id=run_id)}
    assert rows == 12 and spent["t"] == spent[RUN_SCOPE] > 0

    _, go = run_study("study-b", 1, chunks_with([0.5] * 3))  # one micro-USD: no attempt fits
    with pytest.raises(StudySamplingError, match="teacher budget exhausted for provider t"):
        asyncio.run(go())
    engine.dispose()


def test_outputs_hold_every_chunk_and_reanalysis_reproduces_the_table(tmp_path):
    from omniopd.study.estimator_study import read_chunks_jsonl, write_outputs

    rng = random.Random(1)
    p = [rng.uniform(0.1, 0.9) for _ in range(40)]
    chunks = chunks_with(p)
    samples = [["yes" if rng.random() < x else "no" for _ in range(10)] for x in p]
    oracle = [OracleScore([math.log(x)]) for x in p]
    settings = StudySettings(chunks=40, ns=(5, 10), phis=("exact", "edit"), cut="chars", resamples=200)
    result = analyse(chunks, oracle, samples, settings, log=lambda m: None)
    paths = write_outputs(result, tmp_path, chunks, oracle, samples)
    table = paths["markdown"].read_text()
    assert "| Exact match | 10 |" in table and "0.3009 / 0.2417" in table  # the paper's row beside ours
    assert len(paths["chunks"].read_text().splitlines()) == 40 and paths["plot"].stat().st_size > 0
    again = analyse(*read_chunks_jsonl(paths["chunks"]), settings, log=lambda m: None)
    assert [r.bayes.mse.value for r in again.rows] == pytest.approx([r.bayes.mse.value for r in result.rows])
    with pytest.raises(ValueError, match="fewer than N = 20"):
        analyse(chunks, oracle, samples, StudySettings(chunks=40, ns=(20,), phis=("exact",)), log=lambda m: None)
