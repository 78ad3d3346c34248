"""`omniopd dashboard`: a live web page of one or more runs, read-only on their stores.

    sources.py   which runs: configs and the run directories of work directories; their stores
    snapshot.py  one run as the page draws it (db/repo_dashboard.py's aggregates, USD at the edge)
    live.py      the broker now: queue depths, pings, the shared rate limiter's buckets
    app.py       the aiohttp app: the page, three GET endpoints, the token, secrets masked
    static/      the page (HTML, one script, one style sheet; no build step)

A sibling of omniopd.reports on the reports floor: the CLI starts it (`omniopd dashboard`,
and the demo as a child process); nothing below the CLI imports it.
"""
