-- One task by id, wherever it is: waiting or running, or finished.
SELECT id, task_name, queue, state, attempt, errors, crashes, priority,
       nullif(partition_key, '') AS partition_key, payload, last_error, NULL::jsonb AS result, created_at,
       NULL::timestamptz AS finished_at
FROM {schema}.tasks WHERE id = %(id)s
UNION ALL
SELECT id, task_name, queue, state, attempt, errors, crashes, priority, partition_key,
       payload, last_error, result, created_at, finished_at
FROM {schema}.finished_tasks WHERE id = %(id)s
