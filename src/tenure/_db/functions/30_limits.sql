-- Limits: which rows are under a limit, and the limit buckets a claim opens.

-- Whether a queue's or a task name's settings put its work under a limit. This and the
-- two bucket functions below are sql of their arguments alone (no sub-select), so the
-- planner inlines them wherever they are called: each costs only the expression it
-- names (tests/test_schema.py checks that they stay inlined).
CREATE OR REPLACE FUNCTION {schema}.has_limit(p_max integer, p_max_per_key integer)
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_max IS NOT NULL OR p_max_per_key IS NOT NULL
$$;

-- A limit bucket's path, queue/task name/partition key (empty where its kind has none):
-- with the kind, it keys the bucket's advisory lock.
CREATE OR REPLACE FUNCTION {schema}.bucket_path(p_queue text, p_task_name text, p_key text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(p_queue, '') || '/' || coalesce(p_task_name, '') || '/'
           || coalesce(p_key, '')
$$;

-- A limit bucket's name in a claim's map of remaining capacity: kind:queue/name/key.
-- Kinds: 'q' queue, 'qk' queue + key, 't' task name, 'tk' task name + key.
CREATE OR REPLACE FUNCTION {schema}.bucket_name(p_kind text, p_queue text, p_task_name text,
                                                p_key text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_kind || ':' || {schema}.bucket_path(p_queue, p_task_name, p_key)
$$;

-- Whether a new row of this task name in this queue is under a limit: the sender
-- declared one, or a limit on the name or the queue is published. Flagged rows are
-- claimed through the limit buckets and counted by them. plpgsql, like vtime_step: its
-- sub-selects are planned once per session.
CREATE OR REPLACE FUNCTION {schema}.is_limited(p_name text, p_queue text, p_declared boolean)
RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN p_declared
        OR EXISTS (SELECT 1 FROM {schema}.limits l
                   WHERE l.task_name = p_name
                     AND {schema}.has_limit(l.max_concurrency, l.max_concurrency_per_key))
        OR EXISTS (SELECT 1 FROM {schema}.queues q
                   WHERE q.name = p_queue
                     AND {schema}.has_limit(q.max_concurrency, q.max_concurrency_per_key));
END;
$$;

-- Open one limit bucket for this claim: take its transaction advisory lock (or
-- report -1 if another claimer holds it), expire its stale leases so a late
-- renewal cannot revive one, and return how many more attempts it may start.
-- Every row a limit applies to is flagged `limited` (see is_limited; a claim
-- through a bucket flags what it takes), so only flagged rows are counted. Kinds as in
-- bucket_name.
CREATE OR REPLACE FUNCTION {schema}.bucket_open(p_kind text, p_queue text, p_task_name text, p_key text,
                                     p_limit integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_running integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(
            hashtext({channel} || ':' || p_kind),
            hashtext({schema}.bucket_path(p_queue, p_task_name, p_key))) THEN
        RETURN -1;
    END IF;
    PERFORM {schema}.expire_leases(p_queue, p_task_name, p_key, 1000);
    IF p_kind = 'q' THEN
        SELECT count(*) INTO v_running FROM {schema}.tasks t
        WHERE t.state = 'running' AND t.limited AND t.queue = p_queue;
    ELSIF p_kind = 'qk' THEN
        SELECT count(*) INTO v_running FROM {schema}.tasks t
        WHERE t.state = 'running' AND t.limited AND t.queue = p_queue
          AND t.partition_key = p_key;
    ELSIF p_kind = 't' THEN
        SELECT count(*) INTO v_running FROM {schema}.tasks t
        WHERE t.state = 'running' AND t.limited AND t.task_name = p_task_name;
    ELSE
        SELECT count(*) INTO v_running FROM {schema}.tasks t
        WHERE t.state = 'running' AND t.limited AND t.task_name = p_task_name
          AND t.partition_key = p_key;
    END IF;
    RETURN greatest(p_limit - v_running, 0);
END;
$$;

-- Record a bucket's remaining capacity in the claim's map the first time the
-- bucket is met; later candidates of the same bucket read it from the map.
CREATE OR REPLACE FUNCTION {schema}.bucket_visit(p_caps jsonb, p_kind text, p_queue text, p_task_name text,
                                      p_key text, p_limit integer)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_name text := {schema}.bucket_name(p_kind, p_queue, p_task_name, p_key);
BEGIN
    IF p_caps ? v_name THEN
        RETURN p_caps;
    END IF;
    RETURN p_caps || jsonb_build_object(
        v_name, {schema}.bucket_open(p_kind, p_queue, p_task_name, p_key, p_limit));
END;
$$;
