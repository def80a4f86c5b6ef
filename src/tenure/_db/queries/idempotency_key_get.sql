SELECT task_id FROM {schema}.idempotency_keys
WHERE task_name = %(name)s AND key = %(idempotency_key)s
