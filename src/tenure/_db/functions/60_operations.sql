-- Operator actions: cancel and retry one task.

-- Cancel a task: one still waiting ends 'cancelled' at once; a running one is
-- flagged, and its worker (woken through the queue channel) stops it and records
-- 'cancelled', fenced like any outcome. Returns the task's state after the call:
-- cancelled, cancelling, an earlier final state, or missing.
CREATE OR REPLACE FUNCTION {schema}.cancel_task(p_id bigint)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_state text;
BEGIN
    SELECT t.state INTO v_state FROM {schema}.tasks t WHERE t.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        SELECT f.state INTO v_state FROM {schema}.finished_tasks f WHERE f.id = p_id;
        RETURN coalesce(v_state, 'missing');
    END IF;
    IF v_state = 'running' THEN
        UPDATE {schema}.tasks SET cancel_requested = true WHERE id = p_id;
        PERFORM pg_notify({channel}, '!cancel:' || p_id);
        RETURN 'cancelling';
    END IF;
    WITH ended AS (
        DELETE FROM {schema}.tasks t WHERE t.id = p_id
        RETURNING t.*, 'cancelled' AS end_state, t.errors AS end_errors, t.crashes AS end_crashes,
                  'cancelled before it started' AS end_error, NULL::jsonb AS end_result
    )
    {finish_ended};
    PERFORM {schema}.notify_done(ARRAY[p_id]);
    RETURN 'cancelled';
END;
$$;

-- Run a failed, quarantined or cancelled task again: it returns to its queue at its
-- key's fair place with fresh error and crash budgets. The attempt number goes on
-- from where it was, so it stays a fencing token. Returns what it did: 'queued' when
-- it queued the task again, 'unchanged:<state>' when the task is in another state
-- (nothing was changed), 'missing' when there is no such task.
CREATE OR REPLACE FUNCTION {schema}.retry_task(p_id bigint)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_state text;
    v_queue text;
BEGIN
    WITH moved AS (
        DELETE FROM {schema}.finished_tasks f
        WHERE f.id = p_id AND f.state IN ('failed', 'quarantined', 'cancelled')
        RETURNING f.*
    )
    INSERT INTO {schema}.tasks (id, task_name, queue, payload, priority, partition_key, state,
                                attempt, errors, crashes, max_attempts, max_crashes, limited,
                                lease, run_after, created_at, last_error, idempotency_key,
                                vtime)
    SELECT m.id, m.task_name, m.queue, m.payload, m.priority, coalesce(m.partition_key, ''),
           'queued', m.attempt, 0, 0, coalesce(m.max_attempts, 5), coalesce(m.max_crashes, 3),
           {schema}.is_limited(m.task_name, m.queue, m.limited), m.lease, now(), m.created_at, m.last_error, m.idempotency_key,
           {schema}.vtime_base(m.queue, coalesce(m.partition_key, ''))
    FROM moved m
    RETURNING queue INTO v_queue;
    IF v_queue IS NOT NULL THEN
        PERFORM pg_notify({channel}, v_queue);
        RETURN 'queued';
    END IF;
    SELECT t.state INTO v_state FROM {schema}.tasks t WHERE t.id = p_id;
    IF v_state IS NULL THEN
        SELECT f.state INTO v_state FROM {schema}.finished_tasks f WHERE f.id = p_id;
    END IF;
    RETURN coalesce('unchanged:' || v_state, 'missing');
END;
$$;
