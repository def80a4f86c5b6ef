INSERT INTO {schema}.workers (id, host, pid, queues, concurrency, version, state)
VALUES (%(worker)s, %(host)s, %(pid)s, %(queues)s::text[], %(concurrency)s, %(version)s, 'active')
ON CONFLICT (id) DO UPDATE
SET heartbeat_at = now(), state = 'active', stopped_at = NULL
