-- Status counting: bounded counts and queue listings for status pages and metrics.

-- Count one queue's rows in one state, in tasks or finished_tasks: exactly up to
-- p_cap (a bounded scan that stops at p_cap + 1 rows), else the planner's estimate
-- (from tasks_queue_name_state; never below what was counted) with estimated set.
-- oldest is the earliest created_at among the rows counted: the queue's oldest when
-- the count is exact, a lower bound on its age otherwise. Status pages call this so
-- they stay fast over millions of queued or finished rows.
CREATE OR REPLACE FUNCTION {schema}.count_capped(p_table text, p_queue text, p_state text,
                                                 p_cap integer, OUT n bigint,
                                                 OUT estimated boolean, OUT oldest timestamptz)
LANGUAGE plpgsql AS $$  -- not STABLE: EXPLAIN is refused inside a non-volatile function
DECLARE
    v_from text;
    v_plan json;
BEGIN
    IF p_table NOT IN ('tasks', 'finished_tasks') THEN
        RAISE EXCEPTION 'count_capped: % is not a task table', p_table;
    END IF;
    v_from := format('FROM {schema}.%I t WHERE t.queue = %L AND t.state = %L',
                     p_table, p_queue, p_state);
    -- finished rows need no age: counting them can then read the index alone
    EXECUTE format('SELECT count(*), min(s.created_at) FROM (SELECT %s AS created_at %s LIMIT %s) s',
                   CASE WHEN p_table = 'tasks' THEN 't.created_at' ELSE 'NULL::timestamptz' END,
                   v_from, p_cap + 1)
        INTO n, oldest;
    estimated := n > p_cap;
    IF estimated THEN
        EXECUTE 'EXPLAIN (FORMAT JSON) SELECT 1 ' || v_from INTO v_plan;
        n := greatest(n, (v_plan -> 0 -> 'Plan' ->> 'Plan Rows')::numeric::bigint);
    END IF;
END;
$$;

-- Every queue that has work, failures or settings, without scanning a deep backlog:
-- loose index scans over the queued and the unsuccessful finished rows (one probe per
-- queue), the running rows (bounded by the fleet's slots), the first p_cap scheduled
-- ones, and the published queues. For status pages and metrics.
CREATE OR REPLACE FUNCTION {schema}.queue_names(p_cap integer)
RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE
    queued AS (
        (SELECT t.queue FROM {schema}.tasks t WHERE t.state = 'queued' ORDER BY t.queue LIMIT 1)
        UNION ALL
        SELECT (SELECT t.queue FROM {schema}.tasks t
                WHERE t.state = 'queued' AND t.queue > q.queue ORDER BY t.queue LIMIT 1)
        FROM queued q WHERE q.queue IS NOT NULL
    ),
    cold AS (
        (SELECT f.queue FROM {schema}.finished_tasks f WHERE f.state <> 'succeeded'
         ORDER BY f.queue LIMIT 1)
        UNION ALL
        SELECT (SELECT f.queue FROM {schema}.finished_tasks f
                WHERE f.state <> 'succeeded' AND f.queue > c.queue ORDER BY f.queue LIMIT 1)
        FROM cold c WHERE c.queue IS NOT NULL
    )
    SELECT queue FROM queued WHERE queue IS NOT NULL
    UNION SELECT queue FROM cold WHERE queue IS NOT NULL
    UNION SELECT t.queue FROM {schema}.tasks t WHERE t.state = 'running'
    UNION SELECT s.queue FROM (SELECT t.queue FROM {schema}.tasks t
                               WHERE t.state = 'scheduled' LIMIT p_cap) s
    UNION SELECT q.name FROM {schema}.queues q
$$;
