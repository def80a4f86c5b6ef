SELECT {schema}.requeue_task(%(id)s)
