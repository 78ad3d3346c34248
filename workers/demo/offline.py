"""The demo's teacher for objectives that never call it over the network.

White-box OPD (Eq. 2) reads the teacher's logits, so its teacher is the demo's teacher model
loaded by the learner (`loss.whitebox_teacher`); SFT on the teacher's full solutions
(data.teacher_solutions) needs the teacher's answers to the training problems, written once
before training (`omniopd.demo.solutions`). Both use the teacher model that
`omniopd demo --teacher model` serves over vLLM (`omniopd.demo.teacher`, the student's
tokenizer: logits are compared token by token), prepared once per seed and cached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from omniopd.config import OmniConfig
from omniopd.demo.prepare import Prepared, PrepareSpec, training_problems
from omniopd.demo.solutions import TeacherSolutions, write_teacher_solutions
from omniopd.demo.teacher import TeacherSpec, prepare_teacher


def needs_offline_teacher(config: OmniConfig) -> bool:
    """Does this config train against the teacher model without serving it (logits or given solutions)?"""
    return config.loss.needs.teacher_logits or config.data.teacher_solutions is not None


def offline_teacher_overrides(config: OmniConfig, prepared: Prepared, data: PrepareSpec, spec: TeacherSpec,
                              log: Callable[[str], None]) -> list[str]:
    """Prepare the teacher model (cached) and, for SFT, its solutions; the config overrides that point there."""
    spec = replace(spec, tokenizer="student")  # logits must share the student's token ids
    model = prepare_teacher(prepared.root, spec, training_problems(data), prepared.student, log)
    log(f"teacher model ready: {model.path} ({'cached' if model.cached else f'{model.seconds:.0f} s'})")
    overrides = []
    if config.loss.needs.teacher_logits:
        overrides.append(f"loss.whitebox_teacher={model.path}")
        log(f"teacher: {model.path} loaded by the learner for its logits (white-box, no server)")
    if config.data.teacher_solutions is not None:
        made = teacher_solutions(prepared, data, model.path, config, log)
        overrides.append(f"data.teacher_solutions={made.path}")
    return overrides


def teacher_solutions(prepared: Prepared, data: PrepareSpec, teacher_dir, config: OmniConfig,
                      log: Callable[[str], None]) -> TeacherSolutions:
    """The teacher's answers to the training problems (written once per seed, then cached)."""
    from eval.rewards import demo_correct

    made = write_teacher_solutions(teacher_dir, training_problems(data), teacher_dir / "solutions.jsonl",
                                   seed=data.seed, grade=demo_correct, max_new_tokens=config.rollout.max_new_tokens,
                                   log=log)
    log(f"teacher solutions: {made.problems} problems, {made.tokens:,} teacher tokens, "
        f"{100 * made.right_fraction:.1f}% right ({'cached' if made.cached else f'{made.seconds:.0f} s'}): {made.path}")
    return made
