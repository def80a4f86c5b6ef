-- Every rate limit in force (an operator's where one is set), with the code's where an
-- operator's overrides it, and its buckets now: how many, the fewest tokens any holds,
-- the units they spent per second of late, how far a task's request slowed them, and
-- the queue they last held work back in (within the last 5 s). A limit per key is
-- every key's bucket but those with a rate of their own; a bucket never spent from is
-- full and has no row.
WITH f AS MATERIALIZED (SELECT * FROM {schema}.rates_in_force()),
b AS (
    SELECT f.scope, f.name, f.kind, f.key, count(k.scope) AS buckets,
           min({schema}.rate_tokens(k.tokens, k.at, now(), f.per_second, f.burst,
                                    {schema}.rate_factor(k.slow_factor, k.slow_until, now())))
               AS tokens,
           sum(k.recent * exp(-greatest(0.0, extract(epoch FROM now() - k.at)::float8) / 10.0))
               AS recent,
           min({schema}.rate_factor(k.slow_factor, k.slow_until, now())) AS slowed_to,
           max(k.slow_until) FILTER (WHERE k.slow_until > now()) AS slowed_until,
           max(k.held_at) FILTER (WHERE k.held_at > now() - interval '5 seconds') AS held_at,
           (array_agg(k.held_queue ORDER BY k.held_at DESC)
                FILTER (WHERE k.held_at > now() - interval '5 seconds'))[1] AS held_queue
    FROM f
    LEFT JOIN {schema}.rate_buckets k
      ON k.scope = f.scope AND k.name = f.name AND k.per_key = (f.kind <> 'all')
     AND (f.kind = 'all'
          OR (f.kind = 'key' AND k.key = f.key)
          OR (f.kind = 'each' AND NOT EXISTS (
                  SELECT 1 FROM f o
                  WHERE o.scope = f.scope AND o.name = f.name AND o.kind = 'key'
                    AND o.key = k.key)))
    GROUP BY f.scope, f.name, f.kind, f.key
)
SELECT f.scope, f.name, f.kind, f.key, f.per_second, f.burst, f.source,
       c.per_second AS code_per_second, c.burst AS code_burst,
       b.buckets::integer AS buckets, coalesce(b.tokens, f.burst) AS tokens,
       coalesce(b.recent, 0.0) AS recent, coalesce(b.slowed_to, 1.0) AS slowed_to,
       b.slowed_until, b.held_at, b.held_queue
FROM f
JOIN b ON b.scope = f.scope AND b.name = f.name AND b.kind = f.kind AND b.key = f.key
LEFT JOIN {schema}.rate_limits c
  ON f.source = 'operator' AND c.source = 'code' AND c.scope = f.scope AND c.name = f.name
 AND c.kind = f.kind AND c.key = f.key
WHERE %(name)s::text IS NULL OR f.name = %(name)s
ORDER BY f.scope DESC, f.name, f.kind, f.key
