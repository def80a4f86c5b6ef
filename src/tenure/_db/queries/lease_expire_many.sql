SELECT task_id, verdict FROM {schema}.expire_leases(NULL, NULL, NULL, %(max)s)
