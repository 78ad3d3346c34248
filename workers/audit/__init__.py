"""Audit workers: each chunk of a trajectory continued N times by the teacher, scored
with phi against the student's chunk, k_sem stored (Eq. 3; docs/audit.md).

    task.py          the Celery task `omniopd.audit.trajectory` (glue)
    service.py       the audit of one trajectory, chunk by chunk, in cache order
    budget_guard.py  the store-backed budget guard: reserve, ledger row, settle
    teacher_loop.py  one teacher client per process, on its own event loop
"""
