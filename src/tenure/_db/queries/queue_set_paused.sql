-- Pause or resume a queue: a paused queue keeps its tasks and its running work but
-- no worker claims from it.
INSERT INTO {schema}.queues (name, paused) VALUES (%(queue)s, %(paused)s)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = now()
RETURNING name, paused
