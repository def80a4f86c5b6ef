-- Delete one bounded batch of schedule ticks recorded before the cutoff (what each
-- tick sent), oldest first, rows another session holds skipped. No tick is sent
-- again once a schedule has moved past it, so the record is history only.
WITH doomed AS (
    SELECT schedule, tick FROM {schema}.schedule_ticks
    WHERE fired_at < now() - %(older_than)s::interval
    ORDER BY fired_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
),
gone AS (
    DELETE FROM {schema}.schedule_ticks st USING doomed d
    WHERE st.schedule = d.schedule AND st.tick = d.tick
    RETURNING 1
)
SELECT count(*) FROM gone
