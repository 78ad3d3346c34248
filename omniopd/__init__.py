"""OmniOPD: logit-free on-policy distillation from black-box teachers.

`omniopd.algo` holds the paper's mathematics as pure functions; `omniopd.config` every
knob; the rest drives engines (rollouts, teachers, the learner step). Processes, the SQL
store and evaluation live in the sibling packages `workers`, `db` and `eval`.
"""

__version__ = "0.1.0"
