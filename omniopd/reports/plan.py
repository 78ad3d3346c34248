"""`omniopd plan`: what a run's teacher audits will cost, before it starts (paper Appendix B).

Appendix B counts, per trajectory of L tokens after a prompt of P tokens, M x (P + L/2)
teacher input tokens and M x N x C output tokens. `omniopd.reports.forecast.forecast_for_config`
bills that decomposition the way the configured provider does (requests per chunk,
caching, template overhead, the audit's output allowance); this module supplies what it
needs before any trajectory exists:

- P: the mean prompt length of the training problems as the teacher sees them (the Table 7
  user message without the student's chat markup; up to `prompt_sample` problems);
- L: given (`trajectory_tokens`), measured by sampling the student on `sample` training
  problems with the configured engine, or, with neither, rollout.max_new_tokens (an upper
  bound: real trajectories stop earlier, so the forecast is pessimistic);
- trajectories: learner.max_steps x learner.batch_size bundles are trained, fewer when the
  data runs out (problems x epochs x samples_per_prompt); up to `in_flight` more may be
  audited when the learner stops (the pipeline the driver keeps ahead of it).

The plan is written to <run.output_dir>/plan.json, where `omniopd spend` finds it to show
forecast versus actual. A plan whose expected cost exceeds a budget cap (the run's
audit.budget_usd or the teacher's budget_usd) is `over_cap`: the cap would stop the
audits before the run ends, so `omniopd plan` exits non-zero and scripts/start_learner.sh
refuses to start the run unless told to (`--force`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omniopd.config import OmniConfig
from omniopd.reports.forecast import forecast_for_config
from omniopd.teachers.forecast import TrajectoryForecast

PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class Cap:
    """One budget cap that applies to the run's audits."""

    scope: str  # "run" (audit.budget_usd) or the teacher's name (teachers.<name>.budget_usd)
    usd: float


@dataclass(frozen=True)
class Plan:
    """A run's forecast: inputs with where they came from, and tokens / USD per trajectory,
    per learner step and for the run."""

    teacher: str
    model: str
    m: int
    n: int
    c: int
    prompt_tokens: float
    prompt_source: str
    trajectory_tokens: float
    trajectory_source: str
    batch_size: int
    steps: int
    trajectories: int
    in_flight: int
    per_trajectory: TrajectoryForecast
    caps: list[Cap]

    @property
    def per_step(self) -> TrajectoryForecast:
        return self.per_trajectory.times(self.batch_size)

    @property
    def run(self) -> TrajectoryForecast:
        return self.per_trajectory.times(self.trajectories)

    @property
    def run_upper(self) -> TrajectoryForecast:
        """With the audits still in flight when the learner stops."""
        return self.per_trajectory.times(self.trajectories + self.in_flight)

    @property
    def tightest_cap(self) -> Cap | None:
        return min(self.caps, key=lambda c: c.usd, default=None)

    @property
    def over_cap(self) -> bool:
        cap = self.tightest_cap
        return cap is not None and self.run.cost_usd > cap.usd

    @property
    def steps_within_cap(self) -> int | None:
        """Learner steps the tightest cap pays for (None: no cap)."""
        cap = self.tightest_cap
        if cap is None:
            return None
        step = self.per_step.cost_usd
        return self.steps if step <= 0 else min(self.steps, math.floor(cap.usd / step))

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("per_trajectory", "caps")}
        for name in ("per_trajectory", "per_step", "run", "run_upper"):
            out[name] = asdict(getattr(self, name))
        out["caps"] = [asdict(c) for c in self.caps]
        out["over_cap"] = self.over_cap
        out["steps_within_cap"] = self.steps_within_cap
        return out


def run_caps(config: OmniConfig, teacher: str) -> list[Cap]:
    """The budget caps that bound this teacher's audits in this run."""
    caps = []
    if config.audit.budget_usd is not None:
        caps.append(Cap("run", config.audit.budget_usd))
    own = config.teachers[teacher].budget_usd
    if own is not None:
        caps.append(Cap(teacher, own))
    return caps


def training_questions(config: OmniConfig, limit: int | None = None) -> list[str]:
    """Questions of the training split of data.train, in file order (first data.max_problems)."""
    from db.problem_files import read_problem_file

    if config.data.train is None:
        raise ValueError("data.train is not set: the plan measures prompt lengths on the training problems")
    parsed = read_problem_file(config.data.train)
    rows = [r.prompt for r in parsed.rows if r.split == "train"]
    if config.data.max_problems is not None:
        rows = rows[: config.data.max_problems]
    if not rows:
        raise ValueError(f"{config.data.train}: no valid training problems ({len(parsed.errors)} bad rows)")
    return rows if limit is None else rows[:limit]


def trained_trajectories(config: OmniConfig, problems: int) -> int:
    """Bundles the learner will train: max_steps x batch_size, or all the data has."""
    available = problems * config.data.epochs * config.rollout.samples_per_prompt
    return min(config.learner.max_steps * config.learner.batch_size, available)


def in_flight_trajectories(config: OmniConfig) -> int:
    """Trajectories the driver may have issued beyond the last step (workers/learner/driver.py pacing)."""
    r, lr = config.rollout, config.learner
    pipeline = lr.pipeline_depth * r.batch_problems * r.samples_per_prompt
    window = (lr.max_policy_lag + 1) * lr.checkpoint_every * lr.batch_size
    return min(pipeline, max(window, lr.batch_size))


def measure_prompts(config: OmniConfig, questions: list[str]) -> float:
    """Mean prompt tokens as the teacher sees the task: the Table 7 user message (or the bare
    question) without the student's chat markup, counted with the student's tokenizer (the
    teacher adds its own framing: `mode_overhead_tokens`)."""
    from omniopd.models.loading import load_tokenizer
    from omniopd.rollout.prompts import user_message

    tokenizer = load_tokenizer(str(config.student.path))
    template = config.data.prompt_template
    return statistics.fmean(
        len(tokenizer(user_message(q, template), add_special_tokens=False)["input_ids"]) for q in questions
    )


def measure_trajectories(config: OmniConfig, questions: list[str]) -> float:
    """Mean completion tokens of the student sampled once on each question (the configured engine)."""
    from omniopd.rollout.base import Sampling
    from omniopd.rollout.build import build_engine
    from omniopd.rollout.prompts import render_prompts

    r = config.rollout
    with build_engine(config, scoring=False) as engine:
        rendered, _ = render_prompts(engine.tokenizer, list(enumerate(questions)), config.data.prompt_template,
                                     r.max_prompt_tokens)
        if not rendered:
            raise ValueError("every sampled prompt is longer than rollout.max_prompt_tokens")
        sampling = Sampling(max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
                            seed=config.run.seed, stop=tuple(r.stop))
        generations = engine.generate([p.token_ids for p in rendered], 1, sampling)
    return statistics.fmean(len(g.token_ids) for g in generations)


def make_plan(
    config: OmniConfig,
    *,
    trajectory_tokens: float | None = None,
    prompt_tokens: float | None = None,
    sample: int = 0,
    prompt_sample: int = 256,
    log: Callable[[str], None] = lambda _: None,
) -> Plan:
    """Forecast the run of `config` (see the module docstring for where each input comes from)."""
    teacher = config.audit.teacher
    if not teacher:
        raise ValueError("audit.teacher is not set: nothing to plan (name one of the configured teachers)")
    if teacher not in config.teachers:
        raise ValueError(f"audit.teacher {teacher!r} is not configured (teachers: {', '.join(sorted(config.teachers))})")
    questions = training_questions(config)
    if prompt_tokens is None:
        prompt_tokens = measure_prompts(config, questions[:prompt_sample])
        prompt_source = f"mean of {min(len(questions), prompt_sample)} training prompts, as the teacher sees them"
    else:
        prompt_source = "given"
    if trajectory_tokens is not None:
        trajectory_source = "given"
    elif sample > 0:
        log(f"sampling the student on {min(sample, len(questions))} training problems to measure L")
        trajectory_tokens = measure_trajectories(config, questions[:sample])
        trajectory_source = f"mean of {min(sample, len(questions))} student samples"
    else:
        trajectory_tokens = float(config.rollout.max_new_tokens)
        trajectory_source = "rollout.max_new_tokens (upper bound; measure with --sample K)"
    per_trajectory = forecast_for_config(config, prompt_tokens=prompt_tokens, trajectory_tokens=trajectory_tokens)
    return Plan(
        teacher=teacher, model=config.teachers[teacher].model, m=config.chunking.m, n=config.estimator.n,
        c=config.chunking.c, prompt_tokens=prompt_tokens, prompt_source=prompt_source,
        trajectory_tokens=trajectory_tokens, trajectory_source=trajectory_source,
        batch_size=config.learner.batch_size, steps=config.learner.max_steps,
        trajectories=trained_trajectories(config, len(questions)), in_flight=in_flight_trajectories(config),
        per_trajectory=per_trajectory, caps=run_caps(config, teacher),
    )


def plan_path(config: OmniConfig) -> Path:
    return Path(config.run.output_dir) / PLAN_FILE


def write_plan(config: OmniConfig, plan: Plan) -> Path:
    path = plan_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan.to_json(), indent=2) + "\n")
    return path


def read_plan(config: OmniConfig) -> dict[str, Any] | None:
    """The plan written for this run's output directory, or None."""
    path = plan_path(config)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
