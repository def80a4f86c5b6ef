-- Per queue: waiting, due now, running, failed, quarantined, cancelled.
WITH hot AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'queued') AS queued,
           count(*) FILTER (WHERE state = 'queued' AND run_after <= now()) AS due,
           count(*) FILTER (WHERE state = 'running') AS running,
           count(*) FILTER (WHERE state = 'running' AND lease_expires_at < now()) AS expired,
           min(run_after) FILTER (WHERE state = 'queued' AND run_after <= now()) AS oldest_due
    FROM {schema}.tasks GROUP BY queue
),
cold AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'failed') AS failed,
           count(*) FILTER (WHERE state = 'quarantined') AS quarantined,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled
    FROM {schema}.finished_tasks WHERE state <> 'succeeded' GROUP BY queue
)
SELECT coalesce(h.queue, c.queue) AS queue,
       coalesce(h.queued, 0), coalesce(h.due, 0), coalesce(h.running, 0),
       coalesce(h.expired, 0), coalesce(c.failed, 0), coalesce(c.quarantined, 0),
       coalesce(c.cancelled, 0),
       extract(epoch FROM now() - h.oldest_due)
FROM hot h FULL JOIN cold c ON c.queue = h.queue
ORDER BY 1
