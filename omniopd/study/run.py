"""`omniopd study estimator`: collect chunks, oracle scores and teacher samples, then analyse.

The teacher is the config's audit teacher (or `teacher_name`), reached through its
configured client; with `serve="hf"` the study first serves the oracle model itself on
127.0.0.1 behind the provider emulator's OpenAI-compatible wire (the same /v1/completions
raw mode as vLLM), so a CPU-only machine needs no vLLM server. Every HTTP attempt is
reserved against the run's caps and written to the store's ledger under the study's own
run (`<run.name>-study-estimator` by default), so `omniopd spend` shows what a study cost.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from omniopd.config import OmniConfig, TeacherConfig, public_dict
from omniopd.money import micros_to_usd, usd_to_micros
from omniopd.study.estimator_study import (
    StudyResult,
    StudySettings,
    analyse,
    read_chunks_jsonl,
    write_outputs,
)
from omniopd.study.oracle import HFOracle, ServerOracle
from omniopd.study.sampling import sample_continuations
from omniopd.study.student_chunks import sample_student_chunks


@dataclass
class StudyRequest:
    """Where the study's parts come from."""

    config: OmniConfig
    config_path: Path
    settings: StudySettings
    out_dir: Path
    oracle_dir: Path | None = None
    """The teacher's weights (a Hugging Face model directory); default: teachers.<name>.chat_template_from."""
    teacher_name: str | None = None
    serve: str = "none"
    """none: the teacher's configured base_url serves it (e.g. `omniopd models serve`); hf: serve the oracle here."""
    run_name: str | None = None
    plot: Path | None = None
    oracle_url: str | None = None
    """Score with a server (vLLM, `/v1`) instead of local weights; oracle_dir then only gives the tokenizer."""


def _teacher(config: OmniConfig, name: str | None) -> tuple[str, TeacherConfig]:
    name = name or config.audit.teacher
    if not name or name not in config.teachers:
        known = ", ".join(sorted(config.teachers)) or "none"
        raise ValueError(f"no teacher {name!r} in the config: pass --teacher one of ({known}) or set audit.teacher")
    teacher = config.teachers[name]
    if teacher.temperature not in (None, 1.0):
        raise ValueError(f"teachers.{name}.temperature is {teacher.temperature}: the oracle is the model's "
                         "temperature-1 distribution, so the samples must be drawn at temperature 1 "
                         f"(--set teachers.{name}.temperature=1.0)")
    return name, teacher


def oracle_directory(teacher: TeacherConfig, explicit: Path | None) -> Path:
    """The oracle's weights: --oracle, else the teacher's chat_template_from when it is a model directory."""
    if explicit is not None:
        return explicit
    guess = Path(teacher.chat_template_from) if teacher.chat_template_from else None
    if guess is not None and guess.is_dir() and (guess / "config.json").is_file():
        return guess
    raise ValueError("the oracle needs the teacher's weights: pass --oracle MODEL_DIR (a Hugging Face model directory "
                     "of the same model the teacher serves)")


def _study_run(config: OmniConfig, config_path: Path, run_name: str, teacher_name: str, teacher: TeacherConfig):
    """Open the store (a fresh SQLite store is created at the current schema) and the study's run row."""
    from db.migrate import current_revision, require_current_schema, upgrade
    from db.repo_runs import open_run
    from db.store import open_store

    store = open_store(config, config_path, check_schema=False)
    if current_revision(store.engine) is None:
        upgrade(store.engine)
    require_current_schema(store.engine, config_path)
    with store.sessions.begin() as session:
        run = open_run(session, name=run_name, config={**public_dict(config), "study": "estimator"},
                       base_model_path=config.student.path,
                       provider_caps={teacher_name: None if teacher.budget_usd is None else usd_to_micros(teacher.budget_usd)},
                       run_cap=None if config.audit.budget_usd is None else usd_to_micros(config.audit.budget_usd))
    return store, run.id


def _spent(store, run_id: int) -> float:
    from db.models import RUN_SCOPE
    from db.repo_budget import budgets

    with store.sessions.begin() as session:
        return sum(micros_to_usd(b.spent) for b in budgets(session, run_id=run_id) if b.provider == RUN_SCOPE)


def run_estimator_study(request: StudyRequest, *, log: Callable[[str], None] = print,
                        progress: Callable[[str, int, int], None] | None = None) -> tuple[StudyResult, dict[str, Path]]:
    """The whole study; returns the result and the paths of its outputs."""
    from omniopd.teachers import build_teacher, teacher_price
    from omniopd.teachers.emulator import EmulatorConfig, EmulatorThread, transformers_model
    from workers.audit.budget_guard import StoreBudgetGuard

    cfg, s = request.config, request.settings
    teacher_name, teacher = _teacher(cfg, request.teacher_name)
    oracle_dir = oracle_directory(teacher, request.oracle_dir)
    run_name = request.run_name or f"{cfg.run.name}-study-estimator"
    seconds: dict[str, float] = {}
    tick = (lambda stage, done, total: progress(stage, done, total)) if progress else (lambda *a: None)

    t0 = time.monotonic()
    chunks = sample_student_chunks(cfg, s.chunks, log=log, progress=lambda d: tick("student chunks", d, s.chunks))
    seconds["student"] = time.monotonic() - t0

    t0 = time.monotonic()
    if request.oracle_url:
        oracle = ServerOracle(request.oracle_url, teacher.model, oracle_dir, timeout_s=teacher.timeout_s)
    else:
        oracle = HFOracle(oracle_dir, device="cpu")
    scores = []
    for start in range(0, len(chunks), 64):
        part = chunks[start : start + 64]
        contexts = [_context(teacher, oracle_dir, c.prompt) + c.prefix for c in part]
        scores += oracle.score(contexts, [c.text for c in part])
        tick("oracle", len(scores), len(chunks))
    seconds["oracle"] = time.monotonic() - t0
    del oracle

    store, run_id = _study_run(cfg, request.config_path, run_name, teacher_name, teacher)
    with ExitStack() as stack:
        stack.callback(store.dispose)
        if request.serve == "hf":
            emu = stack.enter_context(EmulatorThread(EmulatorConfig(provider=teacher.kind, models=[teacher.model]),
                                                     transformers_model(str(oracle_dir))))
            teacher = teacher.model_copy(update={"base_url": f"{emu.url}/v1"})
            log(f"serving the oracle {oracle_dir} as teacher {teacher.model!r} at {teacher.base_url} (emulator wire, hf)")
        elif request.serve != "none":
            raise ValueError(f"--serve {request.serve!r}: choose none (the configured server) or hf")
        price = teacher_price(teacher, cfg.audit.prices_file)
        executor = stack.enter_context(ThreadPoolExecutor(cfg.store.pool_size, thread_name_prefix="omniopd-ledger"))

        def guard(chunk):
            return StoreBudgetGuard(store.sessions, run_id, teacher_name, None, wait_s=teacher.timeout_s, executor=executor)

        async def collect():
            # With a Redis broker the study shares the run's rate-limit buckets (a study beside a run against
            # the same API key stays within the provider's limits); embedded mode limits this process alone.
            shared = cfg.broker.mode == "redis"
            async with build_teacher(teacher, redis_url=cfg.broker.url if shared else None,
                                     key_prefix=cfg.broker_key_prefix if shared else "") as client:
                return await sample_continuations(
                    client, chunks, max(s.ns), max_new_tokens_factor=teacher.max_new_tokens_factor,
                    concurrency=teacher.concurrency, seed=s.seed, make_guard=guard, price=price,
                    on_done=lambda d: tick("teacher samples", d, len(chunks)))

        t0 = time.monotonic()
        samples = asyncio.run(collect())
        seconds["samples"] = time.monotonic() - t0
        spend = _spent(store, run_id)

    t0 = time.monotonic()
    result = analyse(chunks, scores, samples, s, log=log)
    seconds["analysis"] = time.monotonic() - t0
    result.seconds, result.spend_usd, result.run_name = seconds, spend, run_name
    result.meta = {"oracle": str(oracle_dir), "teacher": teacher_name, "teacher_model": teacher.model,
                   "student": cfg.student.path, "m": cfg.chunking.m, "c": cfg.chunking.c,
                   "placement": cfg.chunking.placement, "serve": request.serve,
                   "oracle_url": request.oracle_url}
    return result, write_outputs(result, request.out_dir, chunks, scores, samples, request.plot)


_TEMPLATES: dict[str, object] = {}


def _context(teacher: TeacherConfig, oracle_dir: Path, prompt: str) -> str:
    """The teacher's rendering of the prompt: its chat template, as the client renders it in raw mode."""
    from omniopd.teachers.prompting import ChatTemplate

    source = teacher.chat_template_from or str(oracle_dir) if teacher.continuation_mode == "raw" else str(oracle_dir)
    if source not in _TEMPLATES:
        _TEMPLATES[source] = ChatTemplate(source)
    return _TEMPLATES[source].render(prompt)  # type: ignore[attr-defined]


def reanalyse(chunks_file: Path, settings: StudySettings, out_dir: Path, plot: Path | None = None, *,
              log: Callable[[str], None] = print) -> tuple[StudyResult, dict[str, Path]]:
    """A new analysis of a finished study's chunks.jsonl (another alpha, phi set, or N): no sampling, no spend."""
    previous = json.loads((chunks_file.parent / "results.json").read_text()) if (chunks_file.parent / "results.json").is_file() else {}
    chunks, scores, samples = read_chunks_jsonl(chunks_file)
    t0 = time.monotonic()
    result = analyse(chunks[: settings.chunks], scores[: settings.chunks], samples[: settings.chunks], settings, log=log)
    result.seconds = {**previous.get("seconds", {}), "analysis": time.monotonic() - t0}
    result.spend_usd, result.run_name = previous.get("spend_usd", 0.0), previous.get("run_name")
    result.meta = {**previous.get("meta", {}), "reanalysed_from": str(chunks_file)}
    return result, write_outputs(result, out_dir, chunks[: settings.chunks], scores[: settings.chunks],
                                 samples[: settings.chunks], plot)
