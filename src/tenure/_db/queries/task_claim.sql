-- A claim that carries no outcomes (see complete_then_claim): its claimed rows, and a
-- last row with verdict 'rate_wait' when a rate limit held work back.
SELECT r_id, r_verdict, r_task_name, r_queue, r_payload, r_attempt, r_errors, r_crashes,
       r_schedule, r_schedule_tick, r_wait
FROM {schema}.complete_then_claim(%(worker)s, '{{}}'::bigint[], '{{}}'::integer[],
                                 '{{}}'::text[], '{{}}'::jsonb[], '{{}}'::text[],
                                 '{{}}'::double precision[], %(queues)s::text[],
                                 %(names)s::text[], %(limit)s, %(lease)s::interval, %(start)s)
