-- Per queue: waiting (due / scheduled), running, expired leases, failures, the
-- queue's settings and the age of its oldest due task.
WITH hot AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'queued') AS queued,
           count(*) FILTER (WHERE state = 'scheduled') AS scheduled,
           count(*) FILTER (WHERE state = 'running') AS running,
           count(*) FILTER (WHERE state = 'running' AND lease_expires_at < now()) AS expired,
           min(created_at) FILTER (WHERE state = 'queued') AS oldest
    FROM {schema}.tasks GROUP BY queue
),
cold AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'failed') AS failed,
           count(*) FILTER (WHERE state = 'quarantined') AS quarantined,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled
    FROM {schema}.finished_tasks WHERE state <> 'succeeded' GROUP BY queue
),
names AS (
    SELECT queue FROM hot UNION SELECT queue FROM cold UNION SELECT name FROM {schema}.queues
)
SELECT n.queue,
       coalesce(h.queued, 0), coalesce(h.scheduled, 0), coalesce(h.running, 0),
       coalesce(h.expired, 0), coalesce(c.failed, 0), coalesce(c.quarantined, 0),
       coalesce(c.cancelled, 0), extract(epoch FROM now() - h.oldest),
       q.max_concurrency, q.max_concurrency_per_key, coalesce(q.weight, 1),
       coalesce(q.paused, false)
FROM names n
LEFT JOIN hot h ON h.queue = n.queue
LEFT JOIN cold c ON c.queue = n.queue
LEFT JOIN {schema}.queues q ON q.name = n.queue
ORDER BY 1
