"""Worker internals: claim loop, outcomes, heartbeat, executor, notifier, assembly."""
