"""The evaluator: Pass@1 of a run's checkpoints while it trains, beside the learner, never
in its way (docs/eval.md, "Learning curves").

    snapshots.py   hard-linked copies of published checkpoints (the learner prunes its own)
    service.py     which policy versions are due, and evaluating one (eval.runner)
    loop.py        the process: poll the store, snapshot, evaluate, log; `omniopd worker evaluator`
"""
