"""Imported once by the grading forkserver (see `eval.pool`): the first math-verify call
builds its LaTeX parser (~1 s); doing it here means every forked worker starts warm,
including the replacement of a worker killed for a timeout."""

from eval.math import verify_answer

verify_answer("\\frac{1}{2}", "0.5")
