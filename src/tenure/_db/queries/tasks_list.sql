-- Tasks matching optional filters, newest first, waiting/running ones and finished
-- ones together. A filter given as NULL matches everything.
SELECT * FROM (
    SELECT id, task_name, queue, state, attempt, errors, crashes, priority,
           nullif(partition_key, '') AS partition_key, created_at, NULL::timestamptz AS finished_at,
           last_error
    FROM {schema}.tasks
    WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
      AND (%(state)s::text IS NULL OR state = %(state)s)
      AND (%(task_name)s::text IS NULL OR task_name = %(task_name)s)
      AND (%(partition_key)s::text IS NULL OR partition_key = %(partition_key)s)
      AND (%(before)s::bigint IS NULL OR id < %(before)s)
    ORDER BY id DESC LIMIT %(limit)s
) hot
UNION ALL
SELECT * FROM (
    SELECT id, task_name, queue, state, attempt, errors, crashes, priority, partition_key,
           created_at, finished_at, last_error
    FROM {schema}.finished_tasks
    WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
      AND (%(state)s::text IS NULL OR state = %(state)s)
      AND (%(task_name)s::text IS NULL OR task_name = %(task_name)s)
      AND (%(partition_key)s::text IS NULL OR partition_key = %(partition_key)s)
      AND (%(before)s::bigint IS NULL OR id < %(before)s)
    ORDER BY id DESC LIMIT %(limit)s
) cold
ORDER BY id DESC LIMIT %(limit)s
