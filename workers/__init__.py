"""The processes of a run, one package per process, on shared Celery and store glue.

    workers/app.py          the Celery app: queues, reliability settings, sends after commit
    workers/broker.py       the run's broker: the configured Redis or a private embedded one
    workers/store.py        the run's store and run row, opened from a config
    workers/launch.py       `run_worker`: the generic launcher behind `omniopd worker ...`
    workers/celery_app.py   a module-level app for Celery's own tools (Flower, inspect)

    workers/rollout/        GPU rollout workers: generate, score (Eq. 6), chunk (Eq. 7)
    workers/audit/          CPU audit workers: teacher continuations, phi, k_sem (Eq. 3)
    workers/learner/        the learner process: driver, claims, steps, checkpoints
    workers/maintenance/    the maintenance sweep: repairs what crashes leave behind
    workers/evaluator/      Pass@1 of checkpoints while the learner trains (eval.every_steps)
    workers/demo/           `omniopd demo`: every process above on one machine, supervised

Each process package holds its Celery glue (`task.py`, 10-30 line tasks) beside the
service it calls. docs/architecture.md draws how they connect.
"""
