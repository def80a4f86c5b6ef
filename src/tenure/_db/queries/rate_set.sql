-- An operator's rate limit (tenure rates set): in force from the next claim, over the
-- code's for the same limit until it is cleared.
INSERT INTO {schema}.rate_limits (scope, name, kind, key, per_second, burst, source)
VALUES (%(scope)s, %(name)s, %(kind)s, %(key)s, %(per_second)s, %(burst)s, 'operator')
ON CONFLICT (scope, name, kind, key, source) DO UPDATE
SET per_second = excluded.per_second, burst = excluded.burst, updated_at = now()
RETURNING 1
