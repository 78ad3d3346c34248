"""The demo's teacher model: correct solutions with real freedom of phrasing, and a prepared
model that is cached, deterministic per seed, and has the tokenizer it was asked for."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import pytest

from omniopd.demo.prepare import PrepareSpec, prepare, training_problems
from omniopd.demo.task import make_problems
from omniopd.demo.teacher import TeacherSpec, prepare_teacher, teacher_solution_text

STEP = re.compile(r"^(?:Then |Next )?(\d+) ([+-]) (\d+) = (\d+)\.?$")


def test_every_phrasing_is_a_correct_solution_and_phrasings_differ():
    rng = random.Random(0)
    problems = make_problems(200, seed=3, id_prefix="t-")
    texts = set()
    for p in problems:
        for _ in range(4):
            text = teacher_solution_text(p, rng)
            texts.add(text)
            lines = text.split("\n")
            assert lines[-1] == f"Answer: {p.answer}"
            steps = [STEP.match(line) for line in lines[: len(p.ops)]]
            assert all(steps), text
            assert not lines[0].startswith(("Then", "Next")), text  # the student's first line is one of them
            value = p.start
            for match, (sign, b) in zip(steps, p.ops, strict=True):
                assert (int(match.group(1)), match.group(2), int(match.group(3))) == (value, sign, b)
                value = value + b if sign == "+" else value - b
                assert int(match.group(4)) == value
            assert lines[len(p.ops):-1] in ([], [f"So {p.answer}"])
    # Four draws per problem give more than one phrasing for almost every problem.
    per_problem = len(texts) / len(problems)
    assert per_problem > 3.0


SMALL = dict(layers=1, hidden_size=64, heads=2, kv_heads=1, intermediate_size=64, steps=3, batch=4)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    spec = PrepareSpec(seed=0, train_problems=60, eval_problems=10, sft_steps=2, sft_batch=4)
    root = tmp_path_factory.mktemp("prepared")
    return spec, prepare(root, spec, log=lambda m: None)


def _digest(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
def test_prepared_teacher_is_cached_deterministic_and_shares_the_student_tokenizer(student, tmp_path):
    spec, prepared = student
    problems = training_problems(spec)
    teacher = TeacherSpec(seed=0, tokenizer="student", **SMALL)
    first = prepare_teacher(tmp_path / "a", teacher, problems, prepared.student, log=lambda m: None)
    again = prepare_teacher(tmp_path / "a", teacher, problems, prepared.student, log=lambda m: None)
    other_dir = prepare_teacher(tmp_path / "b", teacher, problems, prepared.student, log=lambda m: None)
    assert not first.cached and again.cached and again.path == first.path
    assert _digest(first.path) == _digest(other_dir.path)  # deterministic per seed
    assert (first.path / "tokenizer.json").read_bytes() == (prepared.student / "tokenizer.json").read_bytes()
    changed = prepare_teacher(tmp_path / "a", TeacherSpec(seed=1, tokenizer="student", **SMALL), problems,
                              prepared.student, log=lambda m: None)
    assert not changed.cached and _digest(changed.path) != _digest(other_dir.path)  # a new spec retrains


@pytest.mark.slow
def test_the_other_tokenizer_cuts_the_same_text_differently(student, tmp_path):
    from omniopd.models.loading import load_tokenizer

    spec, prepared = student
    teacher = prepare_teacher(tmp_path, TeacherSpec(seed=0, tokenizer="other", **SMALL), training_problems(spec),
                              prepared.student, log=lambda m: None)
    assert teacher.path.name == "teacher-other-tokenizer"
    ours, theirs = load_tokenizer(str(prepared.student)), load_tokenizer(str(teacher.path))
    text = "Compute 7 + 3 - 2.\nThen 10 - 2 = 8.\nSo 8\nAnswer: 8"
    assert len(ours) != len(theirs)
    assert ours(text).input_ids != theirs(text).input_ids
    assert theirs.decode(theirs(text).input_ids) == text  # byte-level: any text round-trips


def test_a_chunk_is_judged_by_the_result_it_writes_for_the_open_step():
    from omniopd.demo.task import chunk_result_is_right

    assert chunk_result_is_right("7 + 3 = 10\n10 - 2 =", " 8\nAnswer: 8") is True
    assert chunk_result_is_right("7 + 3 = 10\n10 - 2 =", " 7\nAnswer: 7") is False
    assert chunk_result_is_right("7 + 3 = 9\n9 - 2 =", " 7\nAnswer") is True  # right from the state written
    assert chunk_result_is_right("7 + 3 = 10\nThen 10 - 2 =", " 8.") is True
    assert chunk_result_is_right("7 + 3 = 10\n", "10 - 2 = 8") is None  # the chunk opens no result
    assert chunk_result_is_right("7 + 3 = 10\nAnswer:", " 10") is None
