-- Pause or resume a schedule. A resumed schedule starts again from its first tick
-- after now: the ticks of the pause are not caught up. Returns its source, or nothing
-- when there is no such schedule.
UPDATE {schema}.schedules s
SET paused = %(paused)s,
    next_tick = CASE WHEN s.paused AND NOT %(paused)s THEN NULL ELSE s.next_tick END,
    fire_at = CASE WHEN s.paused AND NOT %(paused)s THEN now() ELSE s.fire_at END,
    updated_at = CASE WHEN s.paused = %(paused)s THEN s.updated_at ELSE clock_timestamp() END
WHERE s.name = %(name)s
RETURNING s.source
