-- Per schedule, for /metrics: seconds until its next tick (negative: overdue; NULL:
-- not computed yet or paused), when its last tick was, the ticks it missed, paused.
SELECT s.name,
       CASE WHEN NOT s.paused THEN extract(epoch FROM s.next_tick - now())::float8 END,
       extract(epoch FROM s.last_tick)::float8,
       s.missed,
       s.paused
FROM {schema}.schedules s
ORDER BY s.name
LIMIT 10000
