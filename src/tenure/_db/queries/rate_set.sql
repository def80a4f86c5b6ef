-- An operator's rate limit (tenure rates set): in force from the next claim, over the
-- code's for the same limit until it is cleared. A task name's waiting rows are
-- flagged, so the claim of rated work finds them (is_rated flags later sends).
WITH set AS (
    INSERT INTO {schema}.rate_limits (scope, name, kind, key, per_second, burst, source)
    VALUES (%(scope)s, %(name)s, %(kind)s, %(key)s, %(per_second)s, %(burst)s, 'operator')
    ON CONFLICT (scope, name, kind, key, source) DO UPDATE
    SET per_second = excluded.per_second, burst = excluded.burst, updated_at = now()
    RETURNING scope, name
),
flagged AS (
    UPDATE {schema}.tasks t SET limited = true
    FROM set s
    WHERE s.scope = 'task' AND t.task_name = s.name AND NOT t.limited
      AND t.state IN ('scheduled', 'queued')
    RETURNING 1
)
SELECT (SELECT count(*) FROM flagged)
