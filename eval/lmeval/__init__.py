"""OmniOPD's benchmarks as lm-evaluation-harness tasks (omniopd_<benchmark>), graded by
OmniOPD's own graders, on local files. See docs/eval.md ("lm-eval") and taskgen.py."""
