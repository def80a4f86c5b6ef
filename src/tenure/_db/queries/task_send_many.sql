-- Enqueue a batch of tasks of one kind and key in one round trip, in order.
WITH input AS MATERIALIZED (
    SELECT coalesce(%(run_at)s::timestamptz, now() + %(delay)s::interval) AS run_after,
           ({schema}.is_limited(%(name)s, %(queue)s, %(limited)s)
            OR {schema}.is_rated(%(name)s)) AS limited,
           {schema}.vtime_base(%(queue)s, %(partition_key)s) AS base,
           {schema}.vtime_step(%(queue)s, %(partition_key)s) AS step
),
ins AS (
    INSERT INTO {schema}.tasks (task_name, queue, payload, priority, partition_key, max_attempts,
                                max_crashes, limited, lease, run_after, state, vtime, cost)
    SELECT %(name)s, %(queue)s, p.payload::jsonb, %(priority)s, %(partition_key)s,
           %(max_attempts)s, %(max_crashes)s, i.limited, %(lease)s::interval, i.run_after,
           CASE WHEN i.run_after > now() THEN 'scheduled' ELSE 'queued' END,
           CASE WHEN i.run_after > now() THEN 0 ELSE i.base + (p.n - 1) * i.step END,
           p.cost
    FROM unnest(%(payloads)s::text[], %(costs)s::integer[]) WITH ORDINALITY AS p(payload, cost, n),
         input i
    ORDER BY p.n
    RETURNING id, queue, state
)
SELECT array_agg(id ORDER BY id),
       CASE WHEN bool_or(state = 'queued') THEN pg_notify({channel}, min(queue))::text END
FROM ins
