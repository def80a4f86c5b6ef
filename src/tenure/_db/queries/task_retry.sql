SELECT {schema}.retry_task(%(id)s)
