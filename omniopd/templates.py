"""The paper's prompt template (Table 7, appendix A), one definition for training and evaluation.

Kept in its own module, free of heavy imports, because the evaluation's grading workers
(`eval/math.py`) import it as well as the rollout engines (`omniopd/rollout/prompts.py`):
the paper applies the exact same template to the training problems and to every math
benchmark, and a second copy could drift.
"""

from __future__ import annotations

TABLE7_TEMPLATE = (
    "Solve the following math problem step by step. The last line of your response should be "
    "of the form Answer: $Answer (without quotes) where $Answer is the answer to the problem."
    "\n\n{Question}"
)
"""Paper Table 7 (appendix A), verbatim; `{Question}` is replaced by the problem text."""


def table7_prompt(question: str) -> str:
    """The Table 7 user message for one problem."""
    # str.replace, not str.format: only the template's placeholder is substituted, and
    # the template's own `$Answer` needs no escaping.
    return TABLE7_TEMPLATE.replace("{Question}", question)
