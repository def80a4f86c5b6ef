"""``make demo``: a document parsing and indexing fleet that loses a worker, is redeployed
and grows mid-run, and indexes every document exactly once.

The application is ``examples/documents``; this file only runs its demo, see
``examples/documents/demo.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.documents.demo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
