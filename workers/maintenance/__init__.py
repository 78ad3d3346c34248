"""The maintenance worker: expires stale reservations and leases, re-sends lost audits
(docs/workers.md).

    sweep.py   the sweep and its Celery task `omniopd.maintenance.sweep`
"""
