-- Publish this registry's schedules; remove the schedules declared in code for its
-- tasks that it declares no longer. A schedule whose definition changed starts again
-- from its first tick after now (updated_at marks the change, which a worker firing
-- from the old definition sees); an operator's pause is kept.
WITH input AS (
    SELECT * FROM unnest(%(names)s::text[], %(tasks)s::text[], %(queues)s::text[],
                         %(crons)s::text[], %(everys)s::interval[], %(zones)s::text[],
                         %(payloads)s::jsonb[], %(catch_ups)s::text[],
                         %(max_catch_ups)s::integer[], %(jitters)s::interval[],
                         %(overlaps)s::boolean[])
        AS u(name, task_name, queue, cron, every, timezone, payload, catch_up, max_catch_up,
             jitter, overlap)
),
changed AS (
    INSERT INTO {schema}.schedules AS s (name, task_name, queue, cron, every, timezone,
                                         payload, catch_up, max_catch_up, jitter, overlap,
                                         source)
    SELECT i.*, 'code' FROM input i
    ON CONFLICT (name) DO UPDATE
    SET task_name = excluded.task_name, queue = excluded.queue, cron = excluded.cron,
        every = excluded.every, timezone = excluded.timezone, payload = excluded.payload,
        catch_up = excluded.catch_up, max_catch_up = excluded.max_catch_up,
        jitter = excluded.jitter, overlap = excluded.overlap, source = 'code',
        next_tick = NULL, fire_at = now(), updated_at = clock_timestamp()
    WHERE (s.task_name, s.queue, s.cron, s.every, s.timezone, s.payload, s.catch_up,
           s.max_catch_up, s.jitter, s.overlap, s.source)
          IS DISTINCT FROM (excluded.task_name, excluded.queue, excluded.cron, excluded.every,
                            excluded.timezone, excluded.payload, excluded.catch_up,
                            excluded.max_catch_up, excluded.jitter, excluded.overlap, 'code')
    RETURNING s.name
),
removed AS (
    DELETE FROM {schema}.schedules s
    WHERE s.source = 'code' AND s.task_name = ANY(%(all_tasks)s::text[])
      AND s.name <> ALL(%(names)s::text[])
    RETURNING s.name
)
SELECT coalesce((SELECT array_agg(name ORDER BY name) FROM changed), '{{}}'),
       coalesce((SELECT array_agg(name ORDER BY name) FROM removed), '{{}}')
