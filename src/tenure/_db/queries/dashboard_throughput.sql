-- Per queue: tasks finished in the last minute, and how many of them succeeded.
SELECT queue, count(*) AS finished, count(*) FILTER (WHERE state = 'succeeded') AS succeeded
FROM {schema}.finished_tasks
WHERE finished_at >= now() - interval '1 minute'
GROUP BY queue
