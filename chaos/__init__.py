"""tenure's chaos and partition suite: a fault driver, a TCP proxy, and an invariant checker.

``python -m chaos`` runs a randomized campaign against a private embedded PostgreSQL and
prints what the checker found; ``tests/test_chaos.py`` runs short fixed-seed campaigns
of each fault kind inside the test suite.
"""
