-- The partition keys with the largest backlogs, with what they run now.
SELECT queue, nullif(partition_key, '') AS partition_key,
       count(*) FILTER (WHERE state = 'queued') AS queued,
       count(*) FILTER (WHERE state = 'running') AS running
FROM {schema}.tasks
WHERE state IN ('queued', 'running')
GROUP BY queue, partition_key
ORDER BY 3 DESC, 4 DESC
LIMIT %(limit)s
