SELECT {schema}.cancel_task(%(id)s)
