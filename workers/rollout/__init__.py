"""Rollout workers: a batch of slots -> student trajectories with exact entropies (Eq. 6)
and their audit chunks (Eq. 7), recorded in the store (docs/rollout.md).

    task.py     the Celery task `omniopd.rollout.generate` and the worker's engine
    records.py  the service: prompts, seeds, generation, chunk selection -> store records
"""
