-- The partition keys with the largest backlogs, with what they run now.
-- While the hot table is small (up to exact_bytes) every count is exact. Over a deep
-- backlog the queued counts come from a sample of its pages (TABLESAMPLE SYSTEM of
-- sample_pct percent, scaled up) and are flagged as estimates; running counts stay
-- exact (bounded by the fleet's slots).
WITH deep AS (
    SELECT pg_relation_size('{schema}.tasks') > %(exact_bytes)s AS yes
),
queued AS (
    SELECT queue, partition_key, count(*) AS n, false AS estimated
    FROM {schema}.tasks
    WHERE state = 'queued' AND NOT (SELECT yes FROM deep)
    GROUP BY queue, partition_key
    UNION ALL
    SELECT queue, partition_key, round(count(*) * 100.0 / %(sample_pct)s)::bigint, true
    FROM {schema}.tasks TABLESAMPLE SYSTEM (%(sample_pct)s)
    WHERE state = 'queued' AND (SELECT yes FROM deep)
    GROUP BY queue, partition_key
),
running AS (
    SELECT queue, partition_key, count(*) AS n
    FROM {schema}.tasks WHERE state = 'running'
    GROUP BY queue, partition_key
)
SELECT coalesce(q.queue, r.queue) AS queue,
       nullif(coalesce(q.partition_key, r.partition_key), '') AS key,
       coalesce(q.n, 0) AS queued, coalesce(r.n, 0) AS running,
       coalesce(q.estimated, (SELECT yes FROM deep)) AS estimated
FROM queued q
FULL JOIN running r ON r.queue = q.queue AND r.partition_key = q.partition_key
ORDER BY 3 DESC, 4 DESC
LIMIT %(limit)s
