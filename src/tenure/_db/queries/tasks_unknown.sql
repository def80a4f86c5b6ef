-- Queued task names in these queues that the calling worker cannot run.
SELECT DISTINCT task_name FROM {schema}.tasks
WHERE state = 'queued' AND queue = ANY (%(queues)s::text[])
  AND NOT (task_name = ANY (%(names)s::text[]))
LIMIT 20
