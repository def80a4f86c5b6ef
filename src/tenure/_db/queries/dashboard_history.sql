-- The last hour per queue and minute: tasks that arrived and tasks that finished.
-- The dashboard walks back from today's depth with these to draw depth over time,
-- so nothing beyond the task tables is stored. Finished rows are found through
-- finished_tasks_finished_at_idx; a task created in the last hour that finished
-- has finished in the last hour too.
WITH ev AS (
    SELECT queue, date_trunc('minute', created_at) AS m, 1 AS arrived, 0 AS finished
    FROM {schema}.tasks
    WHERE created_at >= now() - interval '1 hour'
    UNION ALL
    SELECT queue, date_trunc('minute', created_at), 1, 0
    FROM {schema}.finished_tasks
    WHERE finished_at >= now() - interval '1 hour' AND created_at >= now() - interval '1 hour'
    UNION ALL
    SELECT queue, date_trunc('minute', finished_at), 0, 1
    FROM {schema}.finished_tasks
    WHERE finished_at >= now() - interval '1 hour'
)
SELECT queue,
       (extract(epoch FROM date_trunc('minute', now()) - m) / 60)::integer AS minutes_ago,
       sum(arrived)::bigint AS arrived,
       sum(finished)::bigint AS finished
FROM ev
GROUP BY queue, m
ORDER BY queue, m
