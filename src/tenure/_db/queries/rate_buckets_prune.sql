-- Delete the rate buckets that are worth nothing kept: full again and not slowed (a
-- claim makes a missing bucket full, so nothing changes), or of a limit no longer in
-- force. A bucket a claim holds is skipped.
WITH f AS MATERIALIZED (SELECT * FROM {schema}.rates_in_force()),
doomed AS (
    SELECT b.scope, b.name, b.per_key, b.key FROM {schema}.rate_buckets b
    WHERE (b.slow_until IS NULL OR b.slow_until < now())
      AND NOT EXISTS (
          SELECT 1 FROM f
          WHERE f.scope = b.scope AND f.name = b.name
            AND (f.kind <> 'all') = b.per_key AND (f.kind <> 'key' OR f.key = b.key)
            AND {schema}.rate_tokens(b.tokens, b.at, now(), f.per_second, f.burst, 1.0)
                < f.burst)
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
),
gone AS (
    DELETE FROM {schema}.rate_buckets b USING doomed d
    WHERE b.scope = d.scope AND b.name = d.name AND b.per_key = d.per_key AND b.key = d.key
    RETURNING 1
)
SELECT count(*) FROM gone
