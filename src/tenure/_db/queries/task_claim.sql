SELECT id, task_name, queue, payload::text, attempt, errors, crashes, schedule, schedule_tick
FROM {schema}.claim(%(worker)s, %(queues)s::text[], %(names)s::text[], %(limit)s,
                    %(lease)s::interval, %(start)s)
