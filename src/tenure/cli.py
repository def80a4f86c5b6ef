"""The ``tenure`` command line: ``tenure --help`` lists the commands.

Every failure a user can cause (a wrong DSN, a bad flag, an unknown module) ends
in one line on stderr that says what to do, and a non-zero exit code. The commands
live in :mod:`tenure._cli`, one module per command group.
"""

from __future__ import annotations

from tenure._cli.main import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
    run()
