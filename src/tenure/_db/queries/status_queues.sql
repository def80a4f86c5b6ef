-- Per queue: waiting (due / scheduled), running, expired leases, failures, the
-- queue's settings and the age of its oldest due task.
-- Nothing here scans a deep backlog or a long history: queue names come from the
-- published queues and from loose index scans (one probe per queue); running and
-- expired are counted exactly (bounded by the fleet's slots); every other count is
-- exact up to the cap and the planner's estimate above it, flagged in the last three
-- columns (queued, scheduled, failed/quarantined/cancelled). An estimated queue's
-- oldest age is a lower bound.
WITH RECURSIVE
queued_names AS (
    (SELECT t.queue FROM {schema}.tasks t WHERE t.state = 'queued' ORDER BY t.queue LIMIT 1)
    UNION ALL
    SELECT (SELECT t.queue FROM {schema}.tasks t
            WHERE t.state = 'queued' AND t.queue > q.queue ORDER BY t.queue LIMIT 1)
    FROM queued_names q WHERE q.queue IS NOT NULL
),
cold_names AS (
    (SELECT f.queue FROM {schema}.finished_tasks f WHERE f.state <> 'succeeded'
     ORDER BY f.queue LIMIT 1)
    UNION ALL
    SELECT (SELECT f.queue FROM {schema}.finished_tasks f
            WHERE f.state <> 'succeeded' AND f.queue > c.queue ORDER BY f.queue LIMIT 1)
    FROM cold_names c WHERE c.queue IS NOT NULL
),
running AS (
    SELECT queue, count(*) AS running,
           count(*) FILTER (WHERE lease_expires_at < now()) AS expired
    FROM {schema}.tasks WHERE state = 'running' GROUP BY queue
),
names AS (
    SELECT queue FROM queued_names WHERE queue IS NOT NULL
    UNION SELECT queue FROM cold_names WHERE queue IS NOT NULL
    UNION SELECT queue FROM running
    UNION SELECT DISTINCT s.queue FROM (SELECT t.queue FROM {schema}.tasks t
                                        WHERE t.state = 'scheduled' LIMIT %(cap)s) s
    UNION SELECT name FROM {schema}.queues
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
       (c.queued).n, (c.scheduled).n, coalesce(r.running, 0), coalesce(r.expired, 0),
       (c.failed).n, (c.quarantined).n, (c.cancelled).n,
       extract(epoch FROM now() - (c.queued).oldest),
       q.max_concurrency, q.max_concurrency_per_key, coalesce(q.weight, 1),
       coalesce(q.paused, false),
       (c.queued).estimated, (c.scheduled).estimated,
       (c.failed).estimated OR (c.quarantined).estimated OR (c.cancelled).estimated
FROM counted c
LEFT JOIN running r ON r.queue = c.queue
LEFT JOIN {schema}.queues q ON q.name = c.queue
ORDER BY 1
