INSERT INTO {schema}.result_waiters (task_id, listener)
VALUES (%(id)s, pg_backend_pid())
ON CONFLICT DO NOTHING
