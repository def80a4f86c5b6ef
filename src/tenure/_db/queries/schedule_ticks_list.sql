-- One schedule's recorded ticks, newest first.
SELECT st.tick, st.outcome, st.task_id, st.fired_at
FROM {schema}.schedule_ticks st
WHERE st.schedule = %(name)s
ORDER BY st.tick DESC
LIMIT %(limit)s
