-- Per queue, from the hot table only: due, scheduled and running tasks, and the age in
-- seconds of the oldest due one. Queues the fleet published but that hold nothing now
-- report zeros.
-- Every worker that serves /metrics runs this every few seconds, so it never scans a
-- deep backlog: due and scheduled counts are exact up to 10,000 per queue and the
-- planner's estimate above (count_capped), and the oldest age is then taken among the
-- first 10,001 due tasks found (a lower bound). Running tasks are counted exactly.
WITH running AS (
    SELECT queue, count(*) AS n FROM {schema}.tasks WHERE state = 'running' GROUP BY queue
)
SELECT n.queue,
       ({schema}.count_capped('tasks', n.queue, 'queued', 10000)).n,
       ({schema}.count_capped('tasks', n.queue, 'scheduled', 10000)).n,
       coalesce(r.n, 0),
       extract(epoch FROM now() - (SELECT min(s.run_after)
                                   FROM (SELECT t.run_after FROM {schema}.tasks t
                                         WHERE t.state = 'queued' AND t.queue = n.queue
                                         LIMIT 10001) s))
FROM {schema}.queue_names(10000) n(queue)
LEFT JOIN running r ON r.queue = n.queue
WHERE n.queue IS NOT NULL
ORDER BY 1
