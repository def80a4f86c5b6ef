-- Enqueue one task: due now it enters its queue at its key's fair place and wakes
-- the queue's workers; later it waits as scheduled.
WITH input AS MATERIALIZED (
    SELECT coalesce(%(run_at)s::timestamptz, now() + %(delay)s::interval) AS run_after,
           ({schema}.is_limited(%(name)s, %(queue)s, %(limited)s)
            OR {schema}.is_rated(%(name)s)) AS limited
),
ins AS (
    INSERT INTO {schema}.tasks (task_name, queue, payload, priority, partition_key, max_attempts,
                                max_crashes, limited, lease, run_after, state, vtime, cost)
    SELECT %(name)s, %(queue)s, %(payload)s::jsonb, %(priority)s, %(partition_key)s,
           %(max_attempts)s, %(max_crashes)s, i.limited, %(lease)s::interval, i.run_after,
           CASE WHEN i.run_after > now() THEN 'scheduled' ELSE 'queued' END,
           CASE WHEN i.run_after > now() THEN 0
                ELSE {schema}.vtime_base(%(queue)s, %(partition_key)s) END,
           %(cost)s
    FROM input i
    RETURNING id, queue, state
)
SELECT id, CASE WHEN state = 'queued' THEN pg_notify({channel}, queue)::text END
FROM ins
