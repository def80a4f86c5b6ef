-- One heartbeat: renew every lease this worker still holds, hand back rows it owns
-- but never received (a claim whose answer never arrived; rows it gave up while
-- self-fenced are `surrendered`: they wait for the reaper, which counts the crash),
-- publish what it holds and runs, read the idle capacity of the other live workers
-- serving its queues, and pick up what operators asked for (tasks to cancel, a drain).
-- Returns the tasks it still owns; anything missing was taken over or finished.
WITH me AS (
    UPDATE {schema}.workers
    SET heartbeat_at = now(), state = %(state)s, held = %(held)s, running = %(running)s,
        outcomes_pending = %(outcomes_pending)s,
        outcomes_stalled_since = CASE
            WHEN %(outcomes_stalled)s::float8 IS NULL THEN NULL
            ELSE coalesce(outcomes_stalled_since,
                          now() - make_interval(secs => %(outcomes_stalled)s::float8))
        END
    WHERE id = %(worker)s
    RETURNING queues, drain_requested
),
renewed AS (
    -- Reached through the primary key and joined to nothing, so the cost is the batch's
    -- whatever the statistics say; each row's attempt is looked up in the batch.
    UPDATE {schema}.tasks t
    SET lease_expires_at = now() + greatest(t.lease, %(lease)s::interval)
    WHERE t.id = ANY (%(ids)s::bigint[])
      AND t.attempt = (%(attempts)s::integer[])[array_position(%(ids)s::bigint[], t.id)]
      AND t.lease_owner = %(worker)s AND t.state = 'running'
    RETURNING t.id, t.cancel_requested
),
unknown AS MATERIALIZED (
    SELECT o.id, o.attempt, o.started_at FROM {schema}.tasks o
    WHERE o.lease_owner = %(worker)s AND o.state = 'running'
      AND NOT (o.id = ANY (%(ids)s::bigint[]))
      AND NOT (o.id = ANY (%(surrendered)s::bigint[]))
      AND o.started_at < now() - %(orphan_after)s::interval
    FOR UPDATE SKIP LOCKED
),
orphaned AS (
    UPDATE {schema}.tasks t
    SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL, started_at = NULL
    WHERE t.id = ANY (ARRAY(SELECT k.id FROM unknown k))
    RETURNING t.id
),
recorded AS (
    -- every unknown row is locked by this statement, so each one is handed back
    INSERT INTO {schema}.attempts (task_id, attempt, worker_id, started_at, ended_at, outcome,
                                   error)
    SELECT id, attempt, %(worker)s, started_at, now(), 'released',
           'claimed but never received by the worker'
    FROM unknown
),
fleet AS (
    SELECT coalesce(sum(greatest(w.concurrency - w.held, 0)), 0) AS idle
    FROM {schema}.workers w, me
    WHERE w.state = 'active' AND w.id <> %(worker)s AND w.queues && me.queues
      AND w.heartbeat_at > now() - %(lease)s::interval
)
SELECT (SELECT count(*) FROM me), array(SELECT id FROM renewed), (SELECT idle FROM fleet),
       (SELECT count(*) FROM orphaned), array(SELECT id FROM renewed WHERE cancel_requested),
       coalesce((SELECT drain_requested FROM me), false),
       array(SELECT s.id FROM {schema}.tasks s
             WHERE s.id = ANY (%(surrendered)s::bigint[]) AND s.lease_owner = %(worker)s)
