"""Where the learner's numbers go besides the store: TensorBoard and a terminal progress bar."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger("omniopd.learner")


@dataclass(frozen=True)
class ProgressView:
    """What the progress bar shows after a step or while waiting."""

    step: int
    max_steps: int
    loss: float | None
    kl: float | None
    bundles_waiting: int
    spend_usd: float
    cap_usd: float | None
    state: str  # "training" | "waiting for bundles" | ...


class MetricsSink(Protocol):
    def step(self, step: int, metrics: Mapping[str, object]) -> None: ...
    def progress(self, view: ProgressView) -> None: ...
    def close(self) -> None: ...


class TensorBoardSink:
    """Scalars per step under `directory` (learner.tensorboard); non-numbers are skipped."""

    def __init__(self, directory: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(directory))

    def step(self, step: int, metrics: Mapping[str, object]) -> None:
        for key, value in metrics.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(f"learner/{key}", value, step)
        self.writer.flush()

    def progress(self, view: ProgressView) -> None:
        pass

    def close(self) -> None:
        self.writer.close()


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def describe(view: ProgressView) -> str:
    cap = f" / ${view.cap_usd:,.2f}" if view.cap_usd is not None else ""
    return (
        f"step {view.step}/{view.max_steps}  loss {_fmt(view.loss)}  KL {_fmt(view.kl)}  "
        f"bundles waiting {view.bundles_waiting}  spend ${view.spend_usd:,.4f}{cap}  [{view.state}]"
    )


class LogSink:
    """One log line per step (always on: logs survive where a progress bar does not)."""

    def step(self, step: int, metrics: Mapping[str, object]) -> None:
        pass

    def progress(self, view: ProgressView) -> None:
        if view.state == "trained":
            log.info(describe(view))

    def close(self) -> None:
        pass


class RichProgress:
    """A rich progress bar: step / max_steps, loss, KL, bundles waiting, spend."""

    def __init__(self, max_steps: int, start_step: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]learner[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"), transient=False,
        )
        self.task = self.bar.add_task("steps", total=max_steps, completed=start_step, info="starting")
        self.bar.start()

    def step(self, step: int, metrics: Mapping[str, object]) -> None:
        pass

    def progress(self, view: ProgressView) -> None:
        cap = f"/${view.cap_usd:,.2f}" if view.cap_usd is not None else ""
        info = (f"loss {_fmt(view.loss)}  KL {_fmt(view.kl)}  waiting {view.bundles_waiting}  "
                f"spend ${view.spend_usd:,.4f}{cap}  {view.state}")
        self.bar.update(self.task, completed=view.step, info=info)

    def close(self) -> None:
        self.bar.stop()
