"""Pipeline model: how long the learner waits for bundles, and how many workers keep it fed.

A learner step trains B bundles. Before a bundle is ready a rollout worker samples its
trajectory and an audit thread audits its M chunks in order (ascending, for the teacher's
prompt cache), each chunk waiting for the slowest of its q = ceil(N / candidates per
request) requests. The model is a steady-state one, with four capacities in trajectories
per second:

    rollout   lam_R    = W_R * r                          (r: measured per rollout worker)
    audit     lam_K    = K / (M * chunk_s)                (K = audit workers x threads)
    rate      lam_rate = f * min(RPM / (M q), ITPM / (M q_in (P + L/2)), OTPM / (M N out)) / 60
    learner   B / T_L                                     (T_L: measured seconds per step)

chunk_s = E[max of q request latencies] (order statistics of a measured latency sample)
+ per-chunk overhead. With k = min(pipeline_depth, max_policy_lag + 1) batches allowed
ahead of the learner (workers/learner/driver.py, checkpoint_every = 1), the step period is

    T = max(T_L,  B / min(lam_R, lam_K, lam_rate),  (latency + T_L) / k)

where latency, one batch from its issue to its last bundle, is B / lam_R for the rollouts
plus the audits: ceil(B / K) waves of M chunks, or B / lam_rate when the limits bind, plus
the tail of the slowest of B trajectories (sqrt(2 ln B) standard deviations of a sum of M
chunk times). The learner waits w = 1 - T_L / T of its wall time. The throughput term is
the queueing view (a stage slower than the learner), the latency term the lag view (a
batch cannot start before the policy it must be sampled from exists).

Limits of the model: it is a mean-value model (no burstiness beyond the tail term); it
counts every input token against ITPM unless told which requests read a cache
(`q_in`); it ignores CPU contention between stages (on one machine the rollout worker slows
the learner; feed it the step time measured in the pipeline, not alone).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace


def expected_max(latencies: Sequence[float], q: int) -> float:
    """E[max of q independent draws] from the empirical distribution of `latencies`.

    With the sample sorted x_1 <= ... <= x_n, P(max <= x_i) = (i / n)^q, so
    E[max] = sum_i x_i ((i / n)^q - ((i - 1) / n)^q). q = 1 gives the mean.
    """
    if not latencies:
        raise ValueError("latencies is empty: give at least one measured request latency")
    if q < 1:
        raise ValueError(f"q must be >= 1 (requests per chunk), got {q}")
    xs, n = sorted(latencies), len(latencies)
    return sum(x * ((i / n) ** q - ((i - 1) / n) ** q) for i, x in enumerate(xs, start=1))


def max_variance(latencies: Sequence[float], q: int) -> float:
    """Variance of the max of q independent draws from the empirical distribution."""
    xs, n = sorted(latencies), len(latencies)
    weights = [(i / n) ** q - ((i - 1) / n) ** q for i in range(1, n + 1)]
    mean = sum(w * x for w, x in zip(weights, xs, strict=True))
    return sum(w * (x - mean) ** 2 for w, x in zip(weights, xs, strict=True))


@dataclass(frozen=True)
class Limits:
    """A provider's rate limits per minute (None: no such limit) and the fraction used."""

    requests_per_min: float | None = None
    input_tokens_per_min: float | None = None
    output_tokens_per_min: float | None = None
    fraction: float = 0.95


@dataclass(frozen=True)
class PipelineInputs:
    """One setting: the shape, the measured stage figures and the worker counts.

    latencies_s are single teacher requests (time to the last token); learner_step_s is
    one step of batch_size bundles as measured inside the running pipeline.
    """

    batch_size: int
    m: int
    n: int
    candidates_per_request: int  # N continuations per request the provider allows (Anthropic 1)
    prompt_tokens: float
    trajectory_tokens: float
    output_tokens: float  # tokens asked of the teacher per continuation (1.5 C)
    learner_step_s: float
    rollout_per_worker: float  # trajectories per second, one rollout worker
    latencies_s: tuple[float, ...]
    limits: Limits
    rollout_workers: int = 1
    audit_threads: int = 8  # K: audits in flight over all audit workers
    pipeline_depth: int = 2
    max_policy_lag: int = 1
    chunk_overhead_s: float = 0.0  # per chunk, besides the requests (similarity, store)
    cached_requests_free: bool = False  # requests 2..q of a chunk read the cache, outside ITPM

    @property
    def q(self) -> int:
        return math.ceil(self.n / self.candidates_per_request)


@dataclass(frozen=True)
class Prediction:
    """What the model says for one setting (rates in trajectories per second)."""

    waiting: float  # fraction of learner wall time spent waiting
    period_s: float  # seconds per learner step
    bottleneck: str  # learner, rollout, audit threads, rate limit, latency
    rollout_rate: float
    audit_rate: float
    rate_limit_rate: float
    demand: float  # B / T_L
    chunk_s: float
    batch_latency_s: float


def predict(p: PipelineInputs) -> Prediction:
    """Steady-state waiting of the learner for one setting (the module docstring's model)."""
    if min(p.batch_size, p.m, p.n, p.rollout_workers, p.audit_threads) < 1:
        raise ValueError("batch_size, m, n, rollout_workers and audit_threads must all be >= 1")
    if p.learner_step_s <= 0 or p.rollout_per_worker <= 0:
        raise ValueError("learner_step_s and rollout_per_worker must be > 0 (measure them first)")
    q = p.q
    chunk_s = expected_max(p.latencies_s, q) + p.chunk_overhead_s
    lam_r = p.rollout_workers * p.rollout_per_worker
    lam_k = p.audit_threads / (p.m * chunk_s)
    lam_rate = rate_limited_rate(p)
    demand = p.batch_size / p.learner_step_s
    # one batch: rollouts, then its audits in waves of K (or as fast as the limits allow),
    # plus the tail of the slowest trajectory (a sum of m chunk times)
    audit_s = max(math.ceil(p.batch_size / p.audit_threads) * p.m * chunk_s, p.batch_size / lam_rate)
    tail_s = math.sqrt(2 * math.log(p.batch_size)) * math.sqrt(p.m * max_variance(p.latencies_s, q))
    latency = p.batch_size / lam_r + audit_s + tail_s
    ahead = max(1, min(p.pipeline_depth, p.max_policy_lag + 1))
    candidates = {
        "learner": p.learner_step_s,
        "rollout": p.batch_size / lam_r,
        "audit threads": p.batch_size / lam_k,
        "rate limit": p.batch_size / lam_rate,
        "latency": (latency + p.learner_step_s) / ahead,
    }
    bottleneck = max(candidates, key=candidates.get)
    period = candidates[bottleneck]
    return Prediction(
        waiting=1.0 - p.learner_step_s / period, period_s=period, bottleneck=bottleneck,
        rollout_rate=lam_r, audit_rate=lam_k, rate_limit_rate=lam_rate, demand=demand,
        chunk_s=chunk_s, batch_latency_s=latency,
    )


def rate_limited_rate(p: PipelineInputs) -> float:
    """Trajectories per second the provider's limits allow (inf without limits)."""
    q, lim = p.q, p.limits
    per_trajectory = {  # (limit per minute, use per trajectory)
        "requests": (lim.requests_per_min, p.m * q),
        "input": (lim.input_tokens_per_min,
                  p.m * (1 if p.cached_requests_free else q) * (p.prompt_tokens + p.trajectory_tokens / 2)),
        "output": (lim.output_tokens_per_min, p.m * p.n * p.output_tokens),
    }
    rates = [limit / use / 60.0 for limit, use in per_trajectory.values() if limit]
    return lim.fraction * min(rates) if rates else math.inf


@dataclass(frozen=True)
class Sizing:
    """The fewest workers that keep the learner's waiting at or under the target, and what
    else must change when no worker count can: batches allowed ahead, or higher limits."""

    rollout_workers: int
    audit_threads: int
    ahead: int  # min(pipeline_depth, max_policy_lag + 1) the sizing assumes
    limit_scale: float  # factor on every rate limit the sizing assumes (1: as given)
    prediction: Prediction  # at the sizing
    reason: str  # what had to change, "" when nothing


def _fewest(p: PipelineInputs, target: float, field: str, bound: int, **fixed: int) -> int:
    """The smallest value of `field` in 1..bound with waiting <= target (waiting is monotone)."""
    lo, hi = 1, bound
    while lo < hi:
        mid = (lo + hi) // 2
        if predict(replace(p, **fixed, **{field: mid})).waiting <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def size(p: PipelineInputs, target: float = 0.05, max_rollout: int = 1024, max_threads: int = 65536) -> Sizing:
    """The fewest rollout workers, then the fewest audit threads, with waiting <= target.

    When no worker count reaches the target, the binding term says what else must change,
    and the sizing is given for the smallest such change: the rate limits scaled up (the
    provider's tier) until they carry the learner's demand, then the batches allowed ahead
    (learner.pipeline_depth = max_policy_lag + 1) raised until the latency of one batch
    (M chunks in order) hides behind the steps ahead of it.
    """
    if not 0 < target < 1:
        raise ValueError(f"target must be in (0, 1), got {target}")
    reasons, scale, q = [], 1.0, p
    unbounded = dict(rollout_workers=max_rollout, audit_threads=max_threads)
    best = predict(replace(q, **unbounded))
    # waiting <= target needs a period <= T_L / (1 - target), so the limits must carry
    # at least demand * (1 - target) trajectories per second
    needed = best.demand * (1 - target)
    if best.rate_limit_rate < needed and best.waiting > target:
        scale = needed / best.rate_limit_rate * 1.0001
        reasons.append(f"the rate limits carry {best.rate_limit_rate:.3g} trajectories/s, the learner needs "
                       f"{best.demand:.3g}: limits x{scale:.2f} assumed")
        q = replace(q, limits=replace(q.limits, fraction=q.limits.fraction * scale))
    ahead = max(1, min(q.pipeline_depth, q.max_policy_lag + 1))
    if predict(replace(q, **unbounded)).waiting > target:
        for k in range(ahead + 1, 4097):
            if predict(replace(q, **unbounded, pipeline_depth=k, max_policy_lag=k - 1)).waiting <= target:
                reasons.append(f"one batch takes {best.batch_latency_s:.1f} s from issue to its last bundle "
                               f"(learner step {q.learner_step_s:.2f} s): pipeline_depth {k}, max_policy_lag "
                               f"{k - 1} assumed (was {ahead} batch(es) ahead)")
                ahead = k
                q = replace(q, pipeline_depth=k, max_policy_lag=k - 1)
                break
        else:
            raise ValueError("no pipeline depth up to 4096 reaches the target: check the inputs")
    workers = _fewest(q, target, "rollout_workers", max_rollout, audit_threads=max_threads)
    threads = _fewest(q, target, "audit_threads", max_threads, rollout_workers=workers)
    final = replace(q, rollout_workers=workers, audit_threads=threads)
    return Sizing(workers, threads, ahead, scale, predict(final), "; ".join(reasons))


def summary(latencies: Sequence[float]) -> str:
    """'mean x s, p50 y s, p90 z s' of a latency sample."""
    xs = sorted(latencies)
    p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
    return f"mean {statistics.fmean(xs):.2f} s, p50 {statistics.median(xs):.2f} s, p90 {p90:.2f} s"


# ------------------------------------------------------------------------- presets


def lognormal_latencies(median_s: float, p90_s: float, n: int = 200) -> tuple[float, ...]:
    """n evenly spaced quantiles of the lognormal with this median and 90th percentile: a
    stand-in latency sample when only those two figures are known (published or measured)."""
    if not 0 < median_s <= p90_s:
        raise ValueError(f"need 0 < median ({median_s}) <= p90 ({p90_s})")
    sigma = math.log(p90_s / median_s) / statistics.NormalDist().inv_cdf(0.9)
    z = statistics.NormalDist()
    return tuple(median_s * math.exp(sigma * z.inv_cdf((i + 0.5) / n)) for i in range(n))


def learner_step_estimate(params: float, tokens: float, peak_flops: float, mfu: float) -> float:
    """Seconds per learner step from FLOPs: 6 per parameter and token for the student's
    forward + backward, 2 for the reference model's forward (the KL anchor of Eq. 8)."""
    return 8 * params * tokens / (peak_flops * mfu)


# The paper's setting (M = 10, N = 10, C = 50, P = 200, L = 6,340; Appendix B) with a
# Qwen3-4B student. Assumed, not measured here (no GPU on the development machine); every
# figure can be replaced on the command line by a measured one:
# - batch 2 bundles per step (the paper's per-device batch; configs/qwen3-4b_*.yaml);
# - learner step from FLOPs: 4.0e9 parameters x 2 x 6,540 tokens at 40% of an H100's
#   989 TFLOP/s dense bf16 peak = 1.06 s;
# - rollout: 4,000 generated tokens/s per H100 for Qwen3-4B at this length (vLLM, large
#   batch) = 0.63 trajectories/s per rollout worker (one GPU each);
# - teacher asked for 1.5 C = 75 tokens; latency to the last token, lognormal: Claude Haiku
#   4.5 median 1.2 s, p90 2.0 s (~0.6 s to first token + 75 tokens at ~120 tokens/s);
#   Gemini 2.5 Flash (thinking off) median 0.9 s, p90 1.6 s;
# - limits: the ones configs/qwen3-4b_claude-haiku.yaml and configs/qwen3-4b_gemini-flash.yaml
#   carry (Anthropic 4,000 requests, 2M input and 400k output tokens per minute; Gemini 2,000
#   requests and 4M input tokens per minute); Anthropic does not count cache reads against
#   input tokens per minute, so requests 2..N of a chunk (cache reads) are left out there.
_PAPER = dict(
    m=10, n=10, prompt_tokens=200.0, trajectory_tokens=6340.0, output_tokens=75.0, batch_size=2,
    learner_step_s=round(learner_step_estimate(4.0e9, 2 * 6540, 989e12, 0.40), 3),
    rollout_per_worker=round(4000 / 6340, 3),
)
PRESETS: dict[str, PipelineInputs] = {
    "paper-claude": PipelineInputs(
        **_PAPER, candidates_per_request=1, latencies_s=lognormal_latencies(1.2, 2.0),
        limits=Limits(4000, 2_000_000, 400_000), cached_requests_free=True,
    ),
    "paper-gemini": PipelineInputs(
        **_PAPER, candidates_per_request=8, latencies_s=lognormal_latencies(0.9, 1.6),
        limits=Limits(2000, 4_000_000, None),
    ),
    # configs/demo.yaml: M = 3, C = 2, N = 4, batch 16, teacher asked for 4 x C = 8 tokens from
    # the emulator at 400 ms + 8 ms per token (scripts/bench/learner_wait.py's default); on
    # the 2-core development machine the student's step took 0.06 s (BENCHMARKS.md, learner
    # waiting) and one rollout worker made 15.7 trajectories/s (BENCHMARKS.md, pipeline model).
    "demo": PipelineInputs(
        m=3, n=4, candidates_per_request=8, prompt_tokens=60.0, trajectory_tokens=30.0, output_tokens=8.0,
        batch_size=16, learner_step_s=0.06, rollout_per_worker=15.7,
        latencies_s=(0.464,), limits=Limits(20000, 4_000_000, None), audit_threads=8,
    ),
}
