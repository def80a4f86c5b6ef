"""Worker internals: claimer, heartbeat, executor, completer, notifier, assembly."""
