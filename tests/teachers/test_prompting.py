"""Continuation forms: whitespace handling of prefills, instruction layout, cache segments,
chat templates."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from omniopd.teachers.prompting import (
    INSTRUCTION_TAIL,
    ChatTemplate,
    PrefixMemory,
    instruction_head,
    instruction_message,
    rejoin,
    split_trailing_whitespace,
)


@given(st.text())
def test_split_moves_all_trailing_whitespace_out(prefix):
    body, ws = split_trailing_whitespace(prefix)
    assert body + ws == prefix
    assert body == body.rstrip() and ws.strip() == ""


def test_rejoin_drops_whitespace_the_prefix_already_had():
    assert rejoin(" ", " 42") == "42"
    assert rejoin("\n\n", "\nStep 2") == "Step 2"  # partial overlap
    assert rejoin(" ", "\n42") == "\n42"  # different whitespace: kept
    assert rejoin("", " 42") == " 42"
    assert rejoin(" ", "42") == "42"  # teacher glued the word on: nothing to drop


@given(st.text(alphabet=" \nab", max_size=12), st.text(alphabet=" \nab", max_size=12))
def test_prefill_then_rejoin_matches_continuing_the_full_prefix(body_text, continuation):
    """A teacher that continues `body` with `ws + c` is a teacher continuing `body + ws` with `c`."""
    _body, ws = split_trailing_whitespace(body_text)
    assert rejoin(ws, ws + continuation) == continuation


def test_instruction_puts_the_fixed_parts_first_and_the_prefix_last():
    message = instruction_message("What is 2+2?", "The answer")
    assert message == instruction_head("What is 2+2?") + "The answer" + INSTRUCTION_TAIL
    longer = instruction_message("What is 2+2?", "The answer is 4")
    # chunks of one trajectory share everything up to the earlier prefix (cache hits)
    shared = instruction_head("What is 2+2?") + "The answer"
    assert message.startswith(shared) and longer.startswith(shared)


def test_prefix_memory_splits_at_the_previous_prefix_of_the_same_prompt():
    memory = PrefixMemory()
    assert memory.segments("m", "P", "abc") == ["abc"]
    assert memory.segments("m", "P", "abc def") == ["abc", " def"]
    assert memory.segments("m", "P", "abc def") == ["abc", " def"]  # asked again: same split
    assert memory.segments("m", "Q", "abc def ghi") == ["abc def ghi"]  # other prompt
    assert memory.segments("m", "P", "xyz") == ["xyz"]  # not an extension
    assert memory.segments("m", "P", "xyz ") == ["xyz "]  # only whitespace added: one block


def test_jinja_chat_template_renders_the_generation_prompt(tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}")
    assert ChatTemplate(str(path)).render("hi") == "[user]hi[assistant]"
