-- Publish the rate limits this registry's code declares (source 'code'), and remove
-- the code's rows of its tasks and declared queues that it no longer declares. An
-- operator's rows stay, and win while they last (rates_in_force).
WITH input AS (
    SELECT * FROM unnest(%(scopes)s::text[], %(names)s::text[], %(kinds)s::text[],
                         %(keys)s::text[], %(per_second)s::double precision[],
                         %(bursts)s::double precision[])
        AS u(scope, name, kind, key, per_second, burst)
),
removed AS (
    DELETE FROM {schema}.rate_limits r
    WHERE r.source = 'code'
      AND ((r.scope = 'task' AND r.name = ANY (%(all_tasks)s::text[]))
           OR (r.scope = 'queue' AND r.name = ANY (%(all_queues)s::text[])))
      AND NOT EXISTS (SELECT 1 FROM input i
                      WHERE i.scope = r.scope AND i.name = r.name AND i.kind = r.kind
                        AND i.key = r.key)
    RETURNING 1
),
changed AS (
    INSERT INTO {schema}.rate_limits (scope, name, kind, key, per_second, burst, source)
    SELECT scope, name, kind, key, per_second, burst, 'code' FROM input
    ON CONFLICT (scope, name, kind, key, source) DO UPDATE
    SET per_second = excluded.per_second, burst = excluded.burst, updated_at = now()
    WHERE (rate_limits.per_second, rate_limits.burst)
          IS DISTINCT FROM (excluded.per_second, excluded.burst)
    RETURNING scope, name
),
-- A task name that got a rate has its waiting rows flagged, so the claim of rated
-- work finds them (is_rated flags those sent from now on).
flagged AS (
    UPDATE {schema}.tasks t SET limited = true
    FROM (SELECT DISTINCT c.name FROM changed c WHERE c.scope = 'task') c
    WHERE t.task_name = c.name AND NOT t.limited AND t.state IN ('scheduled', 'queued')
    RETURNING 1
)
SELECT (SELECT count(*) FROM changed), (SELECT count(*) FROM removed)
