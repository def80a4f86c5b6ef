-- Every schedule, by name, with what it last did and what it does next.
SELECT s.name, s.task_name, s.queue, s.cron,
       extract(epoch FROM s.every)::float8 AS every_seconds, s.timezone, s.payload::text,
       s.catch_up, s.max_catch_up, extract(epoch FROM s.jitter)::float8 AS jitter_seconds,
       s.overlap, s.source, s.paused, s.next_tick, s.fire_at, s.last_tick, s.last_task_id,
       s.last_fired_at, s.missed, s.trigger_requested_at IS NOT NULL AS triggered,
       (SELECT t.state FROM {schema}.tasks t WHERE t.id = s.last_task_id) AS last_task_state
FROM {schema}.schedules s
WHERE %(name)s::text IS NULL OR s.name = %(name)s
ORDER BY s.name
LIMIT %(limit)s
