-- Enqueue one task under an idempotency key: the first sender creates the task, a
-- repeated key returns no row here (the caller then looks the existing task up).
WITH input AS MATERIALIZED (
    SELECT coalesce(%(run_at)s::timestamptz, now() + %(delay)s::interval) AS run_after,
           ({schema}.is_limited(%(name)s, %(queue)s, %(limited)s)
            OR {schema}.is_rated(%(name)s)) AS limited
),
key AS (
    INSERT INTO {schema}.idempotency_keys (task_name, key, task_id)
    VALUES (%(name)s, %(idempotency_key)s, nextval('{schema}.task_ids'))
    ON CONFLICT DO NOTHING
    RETURNING task_id
),
ins AS (
    INSERT INTO {schema}.tasks (id, task_name, queue, payload, priority, partition_key,
                                max_attempts, max_crashes, limited, lease, run_after,
                                idempotency_key, state, vtime, cost)
    SELECT key.task_id, %(name)s, %(queue)s, %(payload)s::jsonb, %(priority)s, %(partition_key)s,
           %(max_attempts)s, %(max_crashes)s, i.limited, %(lease)s::interval, i.run_after,
           %(idempotency_key)s,
           CASE WHEN i.run_after > now() THEN 'scheduled' ELSE 'queued' END,
           CASE WHEN i.run_after > now() THEN 0
                ELSE {schema}.vtime_base(%(queue)s, %(partition_key)s) END,
           %(cost)s
    FROM key, input i
    RETURNING id, queue, state
)
SELECT id, CASE WHEN state = 'queued' THEN pg_notify({channel}, queue)::text END
FROM ins
