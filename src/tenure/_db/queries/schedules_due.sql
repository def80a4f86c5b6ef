-- The schedules of these queues and tasks that are due (a tick, or a run an operator
-- asked for), but those this worker cannot plan, the longest due first; then one row without a name: in how many seconds
-- the next of them is due (NULL: none is). `now` is the database clock, which decides
-- every tick.
WITH mine AS MATERIALIZED (
    SELECT s.name, s.task_name, s.cron, s.every, s.timezone, s.catch_up, s.max_catch_up,
           s.jitter, s.next_tick, s.last_tick, s.updated_at, s.fire_at
    FROM {schema}.schedules s
    WHERE s.queue = ANY(%(queues)s::text[]) AND s.task_name = ANY(%(names)s::text[])
      AND s.name <> ALL(%(skip)s::text[])
      AND (NOT s.paused OR s.trigger_requested_at IS NOT NULL)
)
(SELECT m.name, m.task_name, m.cron, m.every, m.timezone, m.catch_up, m.max_catch_up,
        m.jitter, m.next_tick, m.last_tick, m.updated_at, now() AS now,
        NULL::float8 AS due_in
 FROM mine m WHERE m.fire_at <= now()
 ORDER BY m.fire_at LIMIT %(limit)s)
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, now(),
       extract(epoch FROM min(m.fire_at) - now())::float8
FROM mine m WHERE m.fire_at > now()
