SELECT r_id, r_verdict, r_task_name, r_queue, r_payload, r_attempt, r_errors, r_crashes,
       r_schedule, r_schedule_tick, r_wait
FROM {schema}.complete_then_claim(%(worker)s, %(ids)s::bigint[], %(attempts)s::integer[],
                                 %(outcomes)s::text[], %(results)s::jsonb[],
                                 %(errors)s::text[], %(delays)s::double precision[],
                                 %(queues)s::text[], %(names)s::text[], %(limit)s,
                                 %(lease)s::interval, %(start)s)
