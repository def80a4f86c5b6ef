-- Enqueue one task; wake the queue's workers when it is due now.
WITH ins AS (
    INSERT INTO {schema}.tasks (task_name, queue, payload, priority, partition_key, max_attempts,
                                max_crashes, limited, lease, run_after)
    VALUES (%(name)s, %(queue)s, %(payload)s::jsonb, %(priority)s, %(partition_key)s,
            %(max_attempts)s, %(max_crashes)s, %(limited)s, %(lease)s::interval,
            coalesce(%(run_at)s::timestamptz, now() + %(delay)s::interval))
    RETURNING id, queue, run_after
)
SELECT id, CASE WHEN run_after <= now() THEN pg_notify({channel}, queue)::text END
FROM ins
