"""`omniopd demo`: the whole system on one CPU machine, with real processes.

    run.py        the variants, their stores, evaluations and summary table
    supervise.py  child processes that never outlive the supervisor
"""
