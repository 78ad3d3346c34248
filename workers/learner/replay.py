"""The replay driver: feeds the learner the teacher's full solutions instead of student samples.

SFT in the paper's Table 1 is offline imitation of teacher rollouts: the teacher answers the
training problems once, the student imitates (Eq. 1 on whole trajectories,
`SFTOnTrajectories`). The solutions are a file written before the run (data.teacher_solutions:
one {"id", "completion"} per problem, e.g. by `omniopd.demo.solutions`); this driver records
them as the run's trajectories, so the learner claims, trains, checkpoints and resumes them
exactly as it does rollout workers' samples, and the run's records say what it trained on.

Rules (the same contract as workers/learner/driver.py, `tick` once per learner iteration):
- Order: epochs of the training problems in the rollout driver's order (`epoch_order`), one
  trajectory per (problem, epoch) in slot (problem, epoch, 0, 0).
- Pacing: at most learner.pipeline_depth x learner.batch_size trajectories wait ahead of the
  learner; each is recorded at the newest published policy version, so the policy lag never
  makes one stale (imitation is off-policy by design: nothing is dropped).
- Tokens: the prompt is rendered as the rollout worker renders it; the completion is the
  solution's text re-tokenised with the student's tokenizer plus its EOS (the student learns
  to stop). Log-probabilities and entropies are zeros: SFT reads neither.
- Restart: progress is the set of slots in the store, so a restarted learner continues and a
  slot is never recorded twice (the unique slot makes a racing duplicate harmless too).
- A training problem without a solution in the file stops the learner at start with its id.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from db.repo_audit import promote_if_complete
from db.repo_problems import get_problems, problem_ids
from db.repo_rollouts import pipeline_load
from db.repo_runs import latest_policy_version
from db.repo_trajectories import SlotKey, TrajectoryIn, record_trajectories, recorded_slots
from omniopd.config import OmniConfig
from workers.learner.driver import TRAIN_SPLIT, DriverReport, epoch_order

log = logging.getLogger(__name__)


def read_solutions(path: Path) -> dict[str, str]:
    """problem id -> the teacher's completion, from a JSONL of {"id", "completion"}."""
    if not Path(path).is_file():
        raise ValueError(f"data.teacher_solutions: {path} does not exist (write the teacher's solutions first)")
    out: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[str(row["id"])] = str(row["completion"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"data.teacher_solutions: {path} line {n} is not a {{\"id\", \"completion\"}} "
                             f"object ({exc})") from exc
    return out


class ReplayDriver:
    """Records the teacher's solutions as trajectories ahead of the learner (module docstring)."""

    def __init__(self, *, app: Celery, sessions: sessionmaker[Session], config: OmniConfig, run_id: int) -> None:
        from omniopd.models.loading import load_tokenizer

        if config.data.teacher_solutions is None:
            raise ValueError("the replay driver needs data.teacher_solutions (the teacher's solutions file)")
        self.sessions, self.config, self.run_id = sessions, config, run_id
        self.tokenizer = load_tokenizer(config.student.path)
        solutions = read_solutions(config.data.teacher_solutions)
        with sessions.begin() as session:
            ids = problem_ids(session, split=TRAIN_SPLIT, limit=config.data.max_problems)
            problems = get_problems(session, ids=ids)
        if not problems:
            raise ValueError(f"no problems of split {TRAIN_SPLIT!r} in the store: import them first with "
                             "`omniopd data import --config <config>` (file: data.train)")
        missing = [p.uid for p in problems if p.uid not in solutions]
        if missing:
            raise ValueError(f"data.teacher_solutions ({config.data.teacher_solutions}) has no solution for "
                             f"{len(missing)} training problems (first: id {missing[0]!r}); write one per problem")
        self.problems = {p.id: p for p in problems}
        self.solutions = solutions
        self.order = [(pid, epoch) for epoch in range(config.data.epochs) for pid in epoch_order(ids, config.run.seed, epoch)]

    def tick(self, *, trained_version: int) -> DriverReport:
        learner = self.config.learner
        with self.sessions.begin() as session:
            done = {(s.problem_id, s.epoch) for s in recorded_slots(session, run_id=self.run_id)}
            todo = [pair for pair in self.order if pair not in done]
            waiting = pipeline_load(session, run_id=self.run_id).waiting_trajectories
            room = max(0, learner.pipeline_depth * learner.batch_size - waiting)
            version = latest_policy_version(session, run_id=self.run_id).version
            records = [self._record(pid, epoch, version) for pid, epoch in todo[:room]]
            for made in record_trajectories(session, trajectories=records):
                if made.created:
                    promote_if_complete(session, trajectory_id=made.id)  # no chunks: ready at once
        if records:
            log.info("replay: recorded %d teacher solutions at v%d (%d left)", len(records), version,
                     len(todo) - len(records))
        exhausted = not todo and waiting == 0
        return DriverReport(enqueued_batches=0, in_flight_batches=0, dropped_stale=0, exhausted=exhausted)

    def _record(self, problem_id: int, epoch: int, version: int) -> TrajectoryIn:
        from omniopd.rollout import render_prompt

        problem = self.problems[problem_id]
        prompt = render_prompt(self.tokenizer, problem.uid, problem.prompt, self.config.data.prompt_template,
                               self.config.rollout.max_prompt_tokens)
        text = self.solutions[problem.uid]
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if self.tokenizer.eos_token_id is not None:
            ids.append(int(self.tokenizer.eos_token_id))
        return TrajectoryIn(
            run_id=self.run_id, problem_id=problem_id, policy_version=version, slot=SlotKey(problem_id, epoch, 0, 0),
            prompt_token_ids=prompt.token_ids, completion_token_ids=ids, logprobs=[0.0] * len(ids),
            entropies=[0.0] * len(ids), prompt_text=prompt.text, completion_text=text, finish_reason="stop",
            truncated=False, entropy_source="exact", chunks=[], meta={"source": "teacher_solutions"},
        )
