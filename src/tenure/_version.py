"""tenure's release, one place (the worker records it in its row)."""

__version__ = "0.3.0.dev0"
