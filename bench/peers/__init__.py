"""Adapters that drive peer queues for ``make bench``.

Each adapter is a standalone script run by the Python of the peer's own virtual
environment (``bench/.peers/<name>/``), never imported by tenure's harness. They
share one command shape:

    python <adapter> info                       # JSON: version, settings, recovery defaults
    python <adapter> setup DSN                  # create the peer's objects (fresh)
    python <adapter> enqueue DSN N single|batch [--batch B]   # JSON: tasks/s
    python <adapter> worker DSN [--concurrency C]             # run one worker until SIGTERM
    python <adapter> teardown DSN
"""
