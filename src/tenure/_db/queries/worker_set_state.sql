UPDATE {schema}.workers
SET state = %(state)s,
    heartbeat_at = now(),
    stopped_at = CASE WHEN %(state)s = 'gone' THEN now() END
WHERE id = %(worker)s
