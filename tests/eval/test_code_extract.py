"""Extracting the program from a model response (no sandbox needed)."""

from __future__ import annotations

from eval.code import extract_code


def test_last_python_block_wins():
    response = "First try:\n```python\nprint(1)\n```\nBetter:\n```python\nprint(2)\n```\n"
    assert extract_code(response).source == "print(2)\n"


def test_language_aliases_are_recognised():
    for tag, language in [("py", "python"), ("python3", "python"), ("cpp", "cpp"), ("c++", "cpp"), ("C", "c")]:
        program = extract_code(f"```{tag}\ncode()\n```")
        assert program is not None and program.language == language, tag


def test_requested_language_skips_blocks_in_other_languages():
    response = "```python\nprint(1)\n```\n```cpp\nint main() {}\n```\n"
    assert extract_code(response, "python").source == "print(1)\n"
    assert extract_code(response, "cpp").source == "int main() {}\n"
    assert extract_code(response).language == "cpp"  # no preference: simply the last


def test_blocks_in_unsupported_languages_are_not_code():
    assert extract_code("```java\nclass A {}\n```") is None
    assert extract_code("```text\n3 4\n```\n```python\nprint(7)\n```\n```text\n7\n```").source == "print(7)\n"


def test_untagged_block_language_is_guessed():
    assert extract_code("```\nprint(input())\n```").language == "python"
    assert extract_code("```\n#include <iostream>\nint main(){std::cout<<1;}\n```").language == "cpp"
    assert extract_code("```\n#include <stdio.h>\nint main(){printf(\"1\");}\n```").language == "c"


def test_reasoning_before_think_close_is_ignored():
    response = "<think>```python\nprint('draft')\n```</think>\nFinal:\n```python\nprint('final')\n```"
    assert extract_code(response).source == "print('final')\n"
    assert extract_code("<think>```python\nprint('draft')\n```</think>\nNo code, sorry.") is None


def test_truncated_final_block_is_still_taken():
    assert extract_code("Solution:\n```python\nn = int(input())\nprint(n").source == "n = int(input())\nprint(n"


def test_bare_code_without_fences_is_accepted_only_when_it_is_code():
    assert extract_code("n = int(input())\nprint(n * 2)\n").source.startswith("n = int")
    assert extract_code("The answer uses a greedy algorithm over sorted intervals.") is None
    assert extract_code("#include <cstdio>\nint main(){return 0;}").language == "cpp"
    assert extract_code("#include <stdio.h>\nint main(){return 0;}").language == "c"
    assert extract_code("#include <stdio.h>\nno entry point here") is None
    assert extract_code("") is None


def test_empty_blocks_are_skipped():
    assert extract_code("```python\nprint(1)\n```\n```python\n\n```").source == "print(1)\n"
