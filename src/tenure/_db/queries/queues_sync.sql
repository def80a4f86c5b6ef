-- Publish this registry's queue settings (weight, limits, key weights). A pause set
-- by an operator is left as it is.
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
