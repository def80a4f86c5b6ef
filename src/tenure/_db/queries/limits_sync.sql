-- Publish this registry's fleet-wide limits; lift limits its tasks no longer declare.
WITH input AS (
    SELECT * FROM unnest(%(names)s::text[], %(limits)s::integer[]) AS u(task_name, max_concurrency)
)
INSERT INTO {schema}.limits (task_name, max_concurrency)
SELECT task_name, max_concurrency FROM input
WHERE max_concurrency IS NOT NULL
   OR EXISTS (SELECT 1 FROM {schema}.limits l WHERE l.task_name = input.task_name)
ON CONFLICT (task_name) DO UPDATE
SET max_concurrency = excluded.max_concurrency, updated_at = now()
WHERE limits.max_concurrency IS DISTINCT FROM excluded.max_concurrency
