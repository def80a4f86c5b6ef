-- Per queue, from the hot table only (cheap at any history size): due, scheduled and
-- running tasks, and the age in seconds of the oldest due one. Queues the fleet
-- published but that hold nothing now report zeros.
WITH hot AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'queued') AS queued,
           count(*) FILTER (WHERE state = 'scheduled') AS scheduled,
           count(*) FILTER (WHERE state = 'running') AS running,
           extract(epoch FROM now() - min(run_after) FILTER (WHERE state = 'queued')) AS oldest
    FROM {schema}.tasks
    GROUP BY queue
)
SELECT n.queue, coalesce(h.queued, 0), coalesce(h.scheduled, 0), coalesce(h.running, 0),
       h.oldest
FROM (SELECT queue FROM hot UNION SELECT name FROM {schema}.queues) n
LEFT JOIN hot h ON h.queue = n.queue
ORDER BY 1
