-- Fleet-wide task limits and how much of each is in use. A read that may run against
-- the functions of another release, so it spells has_limit() out.
SELECT l.task_name, l.max_concurrency, l.max_concurrency_per_key,
       (SELECT count(*) FROM {schema}.tasks t
        WHERE t.state = 'running' AND t.task_name = l.task_name) AS running
FROM {schema}.limits l
WHERE l.max_concurrency IS NOT NULL OR l.max_concurrency_per_key IS NOT NULL
ORDER BY 1
