"""The chaos run: the demo task in production mode (PostgreSQL, Redis, several workers)
under a seeded random schedule of faults, then every money and exactly-once invariant
checked against the store (`omniopd chaos`, scripts/chaos.sh).

    schedule.py    a seed -> the faults of one run (process kills, Redis restarts, killed
                   database connections, teacher faults, an overbilling teacher) and its caps
    run.py         one run under its schedule: start, supervise, inject, wind down
    invariants.py  the checks at the end, each with its counts
"""
