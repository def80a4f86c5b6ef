"""``make demo``: a document parsing and indexing fleet that loses a worker, is redeployed
and grows mid-run, and indexes every document exactly once.

The application is ``examples/documents``; this file only runs its demo, see
``examples/documents/demo.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.documents import demo  # noqa: E402


def _tenure() -> str:
    """How to run ``tenure`` from here: this virtualenv's script, else the name."""
    script = Path(sys.executable).with_name("tenure")
    where = os.path.relpath(script) if script.exists() else "tenure"
    return where if not where.startswith("..") else str(script)


if __name__ == "__main__":
    code = demo.main()
    print(f"schema {demo.SCHEMA}; see it with: {_tenure()} status --schema {demo.SCHEMA}")
    sys.exit(code)
