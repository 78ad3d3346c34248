"""Student prompts (paper Table 7 inside the chat template), stop tokens, and the teacher's view.

The same Table 7 template is used for training and evaluation (paper, appendix A):
the question goes into it, the result is the user turn of the student's chat template
with the assistant turn opened (`add_generation_prompt=True`). `data.prompt_template:
none` sends the question text unchanged as the user turn. A tokenizer without a chat
template gets the (templated) text as a plain completion prompt.

Prompts longer than `rollout.max_prompt_tokens` are refused with the problem id, never
silently cut: cutting a math problem changes the problem.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# omniopd.templates holds the one definition (evaluation imports it too); re-exported here.
from omniopd.templates import TABLE7_TEMPLATE as TABLE7_TEMPLATE
from omniopd.templates import table7_prompt

PromptTemplate = Literal["table7", "none"]


@dataclass(frozen=True)
class RenderedPrompt:
    """A problem rendered for the student. Invariant: `token_ids` is the tokenization of `text`
    (no special tokens added), and len(token_ids) <= the limit it was rendered under."""

    problem_id: str | int
    question: str
    text: str
    token_ids: list[int]


class PromptTooLongError(ValueError):
    """A rendered prompt exceeds `rollout.max_prompt_tokens`; carries the problem id."""

    def __init__(self, problem_id: str | int, n_tokens: int, limit: int):
        self.problem_id, self.n_tokens, self.limit = problem_id, n_tokens, limit
        super().__init__(
            f"problem {problem_id!r}: the rendered prompt has {n_tokens} tokens, more than "
            f"rollout.max_prompt_tokens = {limit}; raise the limit or drop the problem"
        )


def user_message(question: str, template: PromptTemplate) -> str:
    """The user-turn text: Table 7 around the question, or the question as is."""
    if template == "table7":
        return table7_prompt(question)
    if template == "none":
        return question
    raise ValueError(f"unknown prompt template {template!r}; use 'table7' or 'none'")


def render_text(tokenizer: Any, question: str, template: PromptTemplate) -> str:
    """The full student prompt text: the user turn inside the chat template, assistant turn open."""
    content = user_message(question, template)
    if not getattr(tokenizer, "chat_template", None):
        return content
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )


def render_prompt(
    tokenizer: Any, problem_id: str | int, question: str, template: PromptTemplate, max_prompt_tokens: int
) -> RenderedPrompt:
    """Render and tokenize one problem; raises PromptTooLongError past `max_prompt_tokens`."""
    text = render_text(tokenizer, question, template)
    # The chat template already wrote BOS / turn markers as text; adding them again would
    # double them.
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) > max_prompt_tokens:
        raise PromptTooLongError(problem_id, len(ids), max_prompt_tokens)
    return RenderedPrompt(problem_id=problem_id, question=question, text=text, token_ids=ids)


def render_prompts(
    tokenizer: Any,
    problems: Sequence[tuple[str | int, str]],
    template: PromptTemplate,
    max_prompt_tokens: int,
) -> tuple[list[RenderedPrompt], list[PromptTooLongError]]:
    """Render (problem_id, question) pairs; too-long ones are returned as refusals, in order."""
    rendered: list[RenderedPrompt] = []
    refused: list[PromptTooLongError] = []
    for problem_id, question in problems:
        try:
            rendered.append(render_prompt(tokenizer, problem_id, question, template, max_prompt_tokens))
        except PromptTooLongError as exc:
            refused.append(exc)
    return rendered, refused


def stop_token_ids(tokenizer: Any, model_dir: str | Path | None = None) -> list[int]:
    """Token ids that end a sample: the tokenizer's EOS plus the model's generation-config EOS list.

    Qwen-style chat models end a turn with <|im_end|> but also know <|endoftext|>; both stop.
    """
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    if model_dir is not None and (Path(model_dir) / "generation_config.json").is_file():
        eos = json.loads((Path(model_dir) / "generation_config.json").read_text()).get("eos_token_id")
        for token in eos if isinstance(eos, list) else [eos]:
            if token is not None and int(token) not in ids:
                ids.append(int(token))
    if not ids:
        raise ValueError(
            "the tokenizer has no EOS token and the model no generation_config.json eos_token_id; "
            "generation could never stop before max_new_tokens — fix the tokenizer config"
        )
    return ids


# ------------------------------------------------------------------ teacher side


@dataclass(frozen=True)
class TeacherContext:
    """What the teacher sees for one chunk (docs/audit.md, "What the teacher sees"): the Table 7 prompt (no student chat
    markup — the teacher adapter applies its own template) and the student's text before the chunk."""

    prompt: str
    prefix: str


def teacher_context(
    tokenizer: Any, question: str, template: PromptTemplate, completion_ids: Sequence[int], start: int
) -> TeacherContext:
    """Teacher prompt + student prefix for a chunk starting at completion token `start`.

    The prefix is `completion_ids[0:start]` decoded exactly as the student produced them:
    special tokens kept, no whitespace clean-up. A prefix that ends inside a multi-byte
    character decodes to U+FFFD at its end (byte-level BPE); the chunk's own text then
    starts with the rest of that character.
    """
    if not 0 <= start <= len(completion_ids):
        raise ValueError(f"chunk start {start} is outside the completion (0..{len(completion_ids)})")
    prefix = tokenizer.decode(
        list(completion_ids[:start]), skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    return TeacherContext(prompt=user_message(question, template), prefix=prefix)
