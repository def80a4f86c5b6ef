-- Lease expiry: expired leases back into claimable work, or quarantined.

-- Turn expired leases back into claimable work, optionally only within one limit
-- bucket (a queue, a task name, a partition key). The expired attempt is recorded
-- as 'lease_expired' and the crash counter bumped; a task that reached its crash
-- cap is quarantined instead of crash-looping the fleet. The first crash is taken
-- over at once (keeping its place in the queue); repeated ones are scheduled with
-- exponential backoff and jitter.
CREATE OR REPLACE FUNCTION {schema}.expire_leases(p_queue text, p_task_name text, p_key text,
                                       p_max integer)
RETURNS TABLE (task_id bigint, verdict text)
LANGUAGE plpgsql
SET enable_sort = off
SET jit = off
AS $$
DECLARE
    v_expired     bigint[];
    v_requeued    bigint[];
    v_quarantined bigint[];
    v_ended       text[];
    v_queues      text[];
BEGIN
    -- The expired rows, locked until the caller commits. The statement after reads them
    -- through the primary key (id = ANY) and joins nothing, so its cost is the batch's
    -- however stale the statistics.
    SELECT array_agg(x.id) INTO v_expired
    FROM (SELECT t.id
          FROM {schema}.tasks t
          WHERE t.state = 'running'
            AND t.lease_expires_at < now()
            AND (p_queue IS NULL OR t.queue = p_queue)
            AND (p_task_name IS NULL OR t.task_name = p_task_name)
            AND (p_key IS NULL OR t.partition_key = p_key)
          ORDER BY t.lease_expires_at
          LIMIT p_max
          FOR UPDATE SKIP LOCKED) x;
    IF v_expired IS NULL THEN
        RETURN;
    END IF;
    WITH recorded AS (
        INSERT INTO {schema}.attempts (task_id, attempt, worker_id, started_at, ended_at, outcome,
                                       error)
        SELECT t.id, t.attempt, t.lease_owner, t.started_at, t.lease_expires_at, 'lease_expired',
               'lease expired: worker ' || t.lease_owner || ' stopped renewing'
        FROM {schema}.tasks t WHERE t.id = ANY (v_expired)
    ),
    ended AS (  -- quarantined, or cancelled if an operator asked
        DELETE FROM {schema}.tasks t
        WHERE t.id = ANY (v_expired) AND (t.crashes + 1 >= t.max_crashes OR t.cancel_requested)
        RETURNING t.*,
                  CASE WHEN t.cancel_requested THEN 'cancelled' ELSE 'quarantined' END
                      AS end_state,
                  t.errors AS end_errors, t.crashes + 1 AS end_crashes,
                  CASE WHEN t.cancel_requested
                       THEN 'cancelled: its worker stopped renewing before it could stop it'
                       ELSE 'quarantined: the lease expired ' || (t.crashes + 1)
                            || ' times (the task kills or stalls its worker)' END AS end_error,
                  NULL::jsonb AS end_result
    ),
    moved AS ({finish_ended} RETURNING id, state),
    requeued AS (
        UPDATE {schema}.tasks t
        SET state = CASE WHEN t.crashes = 0 THEN 'queued' ELSE 'scheduled' END,
            lease_owner = NULL,
            lease_expires_at = NULL,
            started_at = NULL,
            crashes = t.crashes + 1,
            last_error = 'lease expired: worker ' || t.lease_owner || ' stopped renewing',
            run_after = now() + CASE WHEN t.crashes = 0 THEN interval '0'
                                     ELSE least(60, 2 ^ (t.crashes - 1)) * (0.75 + random() / 2)
                                          * interval '1 second' END
        WHERE t.id = ANY (v_expired) AND t.crashes + 1 < t.max_crashes AND NOT t.cancel_requested
        RETURNING t.id, t.queue, t.state
    )
    SELECT (SELECT array_agg(r.id) FROM requeued r),
           (SELECT array_agg(m.id) FROM moved m),
           (SELECT array_agg(m.state) FROM moved m),
           (SELECT array_agg(DISTINCT r.queue) FROM requeued r WHERE r.state = 'queued')
    INTO v_requeued, v_quarantined, v_ended, v_queues;

    PERFORM pg_notify({channel}, q) FROM unnest(v_queues) q;
    PERFORM {schema}.notify_done(v_quarantined);
    RETURN QUERY
        SELECT r, 'requeued'::text FROM unnest(v_requeued) r
        UNION ALL
        SELECT q, e FROM unnest(v_quarantined, v_ended) AS u(q, e);
END;
$$;
