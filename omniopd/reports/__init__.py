"""Reports beside the CLI, read-only on the store: `omniopd plan`, `spend` and `status`.

    plan.py      the forecast of a run's teacher spend before it starts (Appendix B)
    forecast.py  config -> forecast arguments (shared by plan and spend)
    spend.py     ledger, budgets, audit telemetry, cost per trajectory vs forecast
    status.py    trajectories, bundles, spend and queue depths of a run

The CLI (omniopd/cli/) prints them; nothing below the CLI imports this package.
"""
