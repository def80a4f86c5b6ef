-- Publish this registry's queue settings (weight, limits, key weights). A pause set
-- by an operator is left as it is. When a queue gets a limit, its waiting rows are
-- flagged so they are claimed through the limit buckets (limits_flag_running flags
-- its running ones after).
WITH changed AS (
INSERT INTO {schema}.queues (name, weight, max_concurrency, max_concurrency_per_key, key_weights)
SELECT * FROM unnest(%(names)s::text[], %(weights)s::integer[], %(limits)s::integer[],
                     %(per_key)s::integer[], %(key_weights)s::jsonb[])
ON CONFLICT (name) DO UPDATE
SET weight = excluded.weight,
    max_concurrency = excluded.max_concurrency,
    max_concurrency_per_key = excluded.max_concurrency_per_key,
    key_weights = excluded.key_weights,
    updated_at = now()
WHERE (queues.weight, queues.max_concurrency, queues.max_concurrency_per_key, queues.key_weights)
      IS DISTINCT FROM (excluded.weight, excluded.max_concurrency,
                        excluded.max_concurrency_per_key, excluded.key_weights)
RETURNING name, max_concurrency, max_concurrency_per_key
),
flagged AS (
    UPDATE {schema}.tasks t SET limited = true
    FROM changed c
    WHERE t.queue = c.name AND NOT t.limited AND t.state IN ('scheduled', 'queued')
      AND {schema}.has_limit(c.max_concurrency, c.max_concurrency_per_key)
    RETURNING t.id
)
SELECT (SELECT count(*) FROM changed), (SELECT count(*) FROM flagged)
