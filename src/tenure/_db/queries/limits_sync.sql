-- Publish this registry's fleet-wide task limits; lift limits its tasks no longer declare.
-- When a limit appears, the task's waiting rows are flagged so they are claimed
-- through the limit buckets (limits_flag_running flags its running ones after).
WITH input AS (
    SELECT * FROM unnest(%(names)s::text[], %(limits)s::integer[], %(per_key)s::integer[])
        AS u(task_name, max_concurrency, max_concurrency_per_key)
),
changed AS (
INSERT INTO {schema}.limits (task_name, max_concurrency, max_concurrency_per_key)
SELECT task_name, max_concurrency, max_concurrency_per_key FROM input
WHERE {schema}.has_limit(max_concurrency, max_concurrency_per_key)
   OR EXISTS (SELECT 1 FROM {schema}.limits l WHERE l.task_name = input.task_name)
ON CONFLICT (task_name) DO UPDATE
SET max_concurrency = excluded.max_concurrency,
    max_concurrency_per_key = excluded.max_concurrency_per_key,
    updated_at = now()
WHERE (limits.max_concurrency, limits.max_concurrency_per_key)
      IS DISTINCT FROM (excluded.max_concurrency, excluded.max_concurrency_per_key)
RETURNING task_name, max_concurrency, max_concurrency_per_key
),
flagged AS (
    UPDATE {schema}.tasks t SET limited = true
    FROM changed c
    WHERE t.task_name = c.task_name AND NOT t.limited AND t.state IN ('scheduled', 'queued')
      AND {schema}.has_limit(c.max_concurrency, c.max_concurrency_per_key)
    RETURNING t.id
)
SELECT (SELECT count(*) FROM changed), (SELECT count(*) FROM flagged)
