SELECT attempt, worker_id::text AS worker_id, started_at, ended_at, outcome, error
FROM {schema}.attempts WHERE task_id = %(id)s ORDER BY attempt
