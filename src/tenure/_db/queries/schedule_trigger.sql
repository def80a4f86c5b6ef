-- Ask for one run of a schedule now, paused or not: the next worker to look sends it
-- (as a tick of its own, recorded 'triggered'). Returns its name, or nothing.
UPDATE {schema}.schedules s
SET trigger_requested_at = now(), fire_at = least(s.fire_at, now())
WHERE s.name = %(name)s
RETURNING s.name
