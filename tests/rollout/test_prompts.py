"""Student prompts: Table 7 inside the chat template, refusals, stop tokens, the teacher's view."""

from __future__ import annotations

import pytest

from omniopd.models.loading import load_tokenizer
from omniopd.rollout.prompts import (
    TABLE7_TEMPLATE,
    PromptTooLongError,
    render_prompt,
    render_prompts,
    stop_token_ids,
    teacher_context,
    user_message,
)


@pytest.fixture(scope="module")
def tokenizer(rollout_model_dir):
    return load_tokenizer(rollout_model_dir)


def test_table7_template_is_the_papers_text_verbatim():
    assert TABLE7_TEMPLATE == (
        "Solve the following math problem step by step. The last line of your response should be "
        "of the form Answer: $Answer (without quotes) where $Answer is the answer to the problem."
        "\n\n{Question}"
    )


def test_question_with_latex_braces_goes_into_the_template_unchanged():
    question = r"Find $\frac{1}{2} + x$ where {Question} is literal."
    assert user_message(question, "table7") == TABLE7_TEMPLATE.replace("{Question}", question)
    assert user_message(question, "none") == question


def test_prompt_is_the_user_turn_of_the_chat_template_with_the_assistant_turn_open(tokenizer):
    prompt = render_prompt(tokenizer, "p1", "What is 2+3?", "table7", 1024)
    assert prompt.text == (
        "<|im_start|>user\n" + TABLE7_TEMPLATE.replace("{Question}", "What is 2+3?") + "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompt.token_ids == tokenizer(prompt.text, add_special_tokens=False).input_ids
    # the turn markers are single special tokens, not spelled out byte by byte
    assert prompt.token_ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    plain = render_prompt(tokenizer, "p1", "What is 2+3?", "none", 1024)
    assert plain.text == "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"


def test_too_long_prompts_are_refused_with_the_problem_id(tokenizer):
    ok, refused = render_prompts(tokenizer, [("short", "1+1?"), ("long", "seven " * 500), ("also-short", "2+2?")], "table7", 200)
    assert [p.problem_id for p in ok] == ["short", "also-short"]
    assert [r.problem_id for r in refused] == ["long"]
    assert refused[0].n_tokens > 200 and refused[0].limit == 200
    with pytest.raises(PromptTooLongError, match=r"problem 'long'.*max_prompt_tokens = 200"):
        render_prompt(tokenizer, "long", "seven " * 500, "table7", 200)


def test_end_of_turn_and_end_of_text_both_stop(tokenizer, rollout_model_dir):
    ids = stop_token_ids(tokenizer, rollout_model_dir)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") in ids


def test_teacher_sees_the_table7_prompt_and_the_student_tokens_before_the_chunk(tokenizer):
    completion = tokenizer("Step 1: 12 + 30 = 42.\nAnswer: 42", add_special_tokens=False).input_ids
    for start in (0, 3, len(completion)):
        ctx = teacher_context(tokenizer, "What is 12+30?", "table7", completion, start)
        assert ctx.prompt == TABLE7_TEMPLATE.replace("{Question}", "What is 12+30?")
        assert ctx.prefix == tokenizer.decode(completion[:start], skip_special_tokens=False)
        # prefix + chunk text = the student's text (ASCII: no split characters)
        rest = tokenizer.decode(completion[start:], skip_special_tokens=False)
        assert ctx.prefix + rest == "Step 1: 12 + 30 = 42.\nAnswer: 42"
    with pytest.raises(ValueError, match="outside the completion"):
        teacher_context(tokenizer, "q", "table7", completion, len(completion) + 1)


def test_teacher_prefix_keeps_special_tokens_the_student_produced(tokenizer):
    completion = tokenizer("Answer: 4<|im_end|>", add_special_tokens=False).input_ids
    ctx = teacher_context(tokenizer, "2+2?", "none", completion, len(completion))
    assert ctx.prefix == "Answer: 4<|im_end|>" and ctx.prompt == "2+2?"
