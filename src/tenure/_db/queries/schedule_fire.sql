SELECT tick, task_id, outcome
FROM {schema}.schedule_fire(%(name)s, %(expected)s, %(version)s, %(ticks)s::timestamptz[],
                            %(missed)s, %(next)s, %(fire_at)s, %(max_attempts)s,
                            %(max_crashes)s, %(priority)s, %(lease)s::interval, %(limited)s)
