-- Enqueue a batch of tasks of one kind in one round trip.
WITH ins AS (
    INSERT INTO {schema}.tasks (task_name, queue, payload, priority, partition_key, max_attempts,
                                max_crashes, limited, lease, run_after)
    SELECT %(name)s, %(queue)s, p.payload::jsonb, %(priority)s, %(partition_key)s,
           %(max_attempts)s, %(max_crashes)s, %(limited)s, %(lease)s::interval,
           coalesce(%(run_at)s::timestamptz, now() + %(delay)s::interval)
    FROM unnest(%(payloads)s::text[]) WITH ORDINALITY AS p(payload, n)
    ORDER BY p.n
    RETURNING id, queue, run_after
)
SELECT array_agg(id ORDER BY id),
       CASE WHEN bool_or(run_after <= now()) THEN pg_notify({channel}, min(queue))::text END
FROM ins
