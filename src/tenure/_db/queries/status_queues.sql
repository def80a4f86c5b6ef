-- Per queue: waiting (due / scheduled), running, expired leases, failures, the
-- queue's settings and the age of its oldest due task.
-- Nothing here scans a deep backlog or a long history: queue names come from
-- queue_names() (loose index scans, one probe per queue); running and
-- expired are counted exactly (bounded by the fleet's slots); every other count is
-- exact up to the cap and the planner's estimate above it, flagged in the last three
-- columns (queued, scheduled, failed/quarantined/cancelled). An estimated queue's
-- oldest age is a lower bound.
WITH running AS (
    SELECT queue, count(*) AS running,
           count(*) FILTER (WHERE lease_expires_at < now()) AS expired
    FROM {schema}.tasks WHERE state = 'running' GROUP BY queue
),
names AS (
    SELECT n.queue FROM {schema}.queue_names(%(cap)s) n(queue) WHERE n.queue IS NOT NULL
),
counted AS (
    SELECT n.queue,
           {schema}.count_capped('tasks', n.queue, 'queued', %(cap)s) AS queued,
           {schema}.count_capped('tasks', n.queue, 'scheduled', %(cap)s) AS scheduled,
           {schema}.count_capped('finished_tasks', n.queue, 'failed', %(cap)s) AS failed,
           {schema}.count_capped('finished_tasks', n.queue, 'quarantined', %(cap)s)
               AS quarantined,
           {schema}.count_capped('finished_tasks', n.queue, 'cancelled', %(cap)s) AS cancelled
    FROM names n
)
SELECT c.queue,
       (c.queued).n AS queued, (c.scheduled).n AS scheduled,
       coalesce(r.running, 0) AS running, coalesce(r.expired, 0) AS expired,
       (c.failed).n AS failed, (c.quarantined).n AS quarantined, (c.cancelled).n AS cancelled,
       extract(epoch FROM now() - (c.queued).oldest)::float8 AS oldest_seconds,
       q.max_concurrency, q.max_concurrency_per_key, coalesce(q.weight, 1) AS weight,
       coalesce(q.paused, false) AS paused,
       (c.queued).estimated AS queued_estimated, (c.scheduled).estimated AS scheduled_estimated,
       (c.failed).estimated OR (c.quarantined).estimated OR (c.cancelled).estimated
           AS finished_estimated
FROM counted c
LEFT JOIN running r ON r.queue = c.queue
LEFT JOIN {schema}.queues q ON q.name = c.queue
ORDER BY 1
