-- The move of ended tasks from tasks to finished_tasks, written once. {finish_ended} in
-- a function stands for this statement (sqlfiles fills it in), which reads a CTE named
-- `ended` that the function defines just before: the rows deleted from tasks (t.*) and
-- how each ended (end_state, end_errors, end_crashes, end_error, end_result). A column
-- that finished_tasks keeps from tasks is added here, and in retry_task's reverse move.
INSERT INTO {schema}.finished_tasks (id, task_name, queue, payload, priority, partition_key,
                                     state, attempt, errors, crashes, created_at, last_error,
                                     result, idempotency_key, max_attempts, max_crashes, lease,
                                     limited)
SELECT e.id, e.task_name, e.queue, e.payload, e.priority, nullif(e.partition_key, ''),
       e.end_state, e.attempt, e.end_errors, e.end_crashes, e.created_at, e.end_error,
       e.end_result, e.idempotency_key, e.max_attempts, e.max_crashes, e.lease, e.limited
FROM ended e
