-- Pause or resume a queue: a paused queue keeps its tasks and its running work but
-- no worker claims from it. Only a queue the database knows (queue_names: workers
-- published it, it has tasks or settings), unless %(create)s: an unknown name
-- changes nothing and returns no row.
INSERT INTO {schema}.queues (name, paused)
SELECT %(queue)s, %(paused)s
WHERE %(create)s OR %(queue)s IN (SELECT n FROM {schema}.queue_names(%(cap)s) n)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = now()
RETURNING name, paused
