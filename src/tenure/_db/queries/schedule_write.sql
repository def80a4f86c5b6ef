-- An operator's schedule, added or changed (from its first tick after now). A name
-- that code declares is left alone: nothing comes back, and the caller says so.
INSERT INTO {schema}.schedules AS s (name, task_name, queue, cron, every, timezone, payload,
                                     catch_up, max_catch_up, jitter, overlap, source)
VALUES (%(name)s, %(task)s, %(queue)s, %(cron)s, %(every)s::interval, %(zone)s,
        %(payload)s::jsonb, %(catch_up)s, %(max_catch_up)s, %(jitter)s::interval,
        %(overlap)s, 'operator')
ON CONFLICT (name) DO UPDATE
SET task_name = excluded.task_name, queue = excluded.queue, cron = excluded.cron,
    every = excluded.every, timezone = excluded.timezone, payload = excluded.payload,
    catch_up = excluded.catch_up, max_catch_up = excluded.max_catch_up,
    jitter = excluded.jitter, overlap = excluded.overlap,
    next_tick = NULL, fire_at = now(), updated_at = clock_timestamp()
WHERE s.source = 'operator'
RETURNING s.name
