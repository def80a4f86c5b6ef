"""Maintenance loops that any live worker runs: no worker is special."""
