DELETE FROM {schema}.result_waiters WHERE task_id = %(id)s AND listener = pg_backend_pid()
