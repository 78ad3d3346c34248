"""A run's config as forecast arguments: the one place `omniopd plan` (before a run) and
`omniopd spend` (during one) turn M, N, C, the teacher, its prices and its caching into
`omniopd.teachers.forecast.forecast_trajectory`'s plain arguments, so they agree by
construction up to what they are given (the prompt length P and the trajectory length L).
"""

from __future__ import annotations

from omniopd.config import OmniConfig
from omniopd.teachers.forecast import (
    TrajectoryForecast,
    cache_rule,
    first_request_alone,
    forecast_trajectory,
    mode_overhead_tokens,
    requested_output_tokens,
)
from omniopd.teachers.pricing import Price


def forecast_for_config(
    config: OmniConfig, *, prompt_tokens: float, trajectory_tokens: float, teacher: str | None = None, price: Price | None = None
) -> TrajectoryForecast:
    """Forecast of one trajectory's audit with the config's M, N, C, teacher, prices and
    caching; each continuation is counted at what the audit asks for (C x max_new_tokens_factor),
    fewer near the end of the trajectory, where the teacher's answer ends too."""
    name = teacher or config.audit.teacher
    if name not in config.teachers:
        raise ValueError(f"teacher {name!r} is not configured (teachers: {', '.join(sorted(config.teachers)) or 'none'})")
    t = config.teachers[name]
    if price is None:
        from omniopd.teachers.build import teacher_price

        price = teacher_price(t, config.audit.prices_file)
    c = config.chunking.c
    return forecast_trajectory(
        m=config.chunking.m, n=config.estimator.n, c=c, prompt_tokens=prompt_tokens, trajectory_tokens=trajectory_tokens,
        output_tokens=requested_output_tokens(c, t.max_new_tokens_factor), kind=t.kind,
        cache=cache_rule(t.kind, t.model, t.cache), price=price, first_alone=first_request_alone(t.kind, t.cache),
        overhead_tokens=mode_overhead_tokens(t.continuation_mode), ends_with_answer=True,
    )
