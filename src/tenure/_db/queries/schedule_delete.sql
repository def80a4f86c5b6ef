-- Delete a schedule (its ticks' record stays); returns its source, or nothing.
DELETE FROM {schema}.schedules s WHERE s.name = %(name)s RETURNING s.source
