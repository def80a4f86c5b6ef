-- Outcomes: fenced completion of a batch, the fused complete-and-claim round trip, and
-- the notification of result waiters.

-- Record the outcomes of a batch of attempts, each fenced on (id, attempt, owner):
-- a row this worker no longer owns is left alone and missing from the result. A
-- task named twice in one batch counts once.
-- Outcomes: succeeded, error, timed_out (retried after p_delays seconds until
-- max_attempts), discarded (failed at once), cancelled, released (handed back
-- without spending an attempt, keeping its place in the queue). Queues that got
-- claimable work back, or a freed slot under a limit, are woken.
-- Only the row decides a cancel: once cancel_requested is set every outcome but
-- success ends the task cancelled, and without it a 'cancelled' outcome is recorded
-- as an error saying so, retried like any other (a worker must never stop a task on
-- a notification alone: anyone who can connect may send one).
CREATE OR REPLACE FUNCTION {schema}.complete(p_worker uuid, p_ids bigint[], p_attempts integer[],
                                  p_outcomes text[], p_results jsonb[], p_errors text[],
                                  p_delays double precision[])
RETURNS TABLE (task_id bigint, verdict text)
LANGUAGE plpgsql
SET enable_nestloop = off
SET enable_mergejoin = off
SET jit = off
AS $$
DECLARE
    v_ids      bigint[];
    v_verdicts text[];
    v_queues   text[];
    v_touched  text[];
BEGIN
    WITH input AS (
        SELECT DISTINCT ON (u.id) u.*
        FROM unnest(p_ids, p_attempts, p_outcomes, p_results, p_errors, p_delays)
            AS u(id, attempt, outcome, result, error, delay)
        ORDER BY u.id
    ),
    -- The batch's rows this worker still owns, locked. Like every read of the hot table
    -- below, it goes through the primary key (id = ANY) and joins nothing, so its cost
    -- is the batch's whatever the statistics say.
    held AS MATERIALIZED (
        SELECT t.id, t.attempt, t.started_at, t.queue, t.limited, t.errors, t.max_attempts,
               t.cancel_requested
        FROM {schema}.tasks t
        WHERE t.id = ANY (p_ids) AND t.state = 'running' AND t.lease_owner = p_worker
        FOR UPDATE
    ),
    owned AS MATERIALIZED (
        SELECT h.id, h.attempt, h.started_at, h.queue, h.limited,
               CASE WHEN i.outcome = 'cancelled' AND NOT h.cancel_requested THEN 'error'
                    ELSE i.outcome END AS outcome,
               i.result,
               CASE WHEN i.outcome = 'cancelled' AND NOT h.cancel_requested
                    THEN 'cancelled by the worker without a cancel request'
                    ELSE i.error END AS error,
               i.delay,
               CASE
                   WHEN i.outcome = 'succeeded' THEN 'succeeded'
                   WHEN h.cancel_requested THEN 'cancelled'
                   WHEN i.outcome = 'released' THEN 'released'
                   WHEN i.outcome = 'discarded' THEN 'failed'
                   WHEN h.errors + 1 >= h.max_attempts THEN 'failed'
                   ELSE 'retry'
               END AS verdict
        FROM held h
        JOIN input i ON i.id = h.id AND i.attempt = h.attempt
    ),
    recorded AS (
        INSERT INTO {schema}.attempts (task_id, attempt, worker_id, started_at, ended_at, outcome,
                                       error)
        SELECT o.id, o.attempt, p_worker, o.started_at, now(),
               CASE WHEN o.outcome = 'discarded' THEN 'error' ELSE o.outcome END, o.error
        FROM owned o
    ),
    removed AS (
        DELETE FROM {schema}.tasks t
        WHERE t.id = ANY (ARRAY(SELECT o.id FROM owned o
                                WHERE o.verdict IN ('succeeded', 'failed', 'cancelled')))
        RETURNING t.*
    ),
    ended AS (
        SELECT r.*, o.verdict AS end_state,
               r.errors + (o.verdict = 'failed')::integer AS end_errors,
               r.crashes AS end_crashes, coalesce(o.error, r.last_error) AS end_error,
               o.result AS end_result
        FROM removed r JOIN owned o ON o.id = r.id
    ),
    finished AS ({finish_ended}),
    requeued AS (
        UPDATE {schema}.tasks t
        SET state = CASE WHEN o.verdict = 'retry' AND o.delay > 0 THEN 'scheduled'
                         ELSE 'queued' END,
            lease_owner = NULL, lease_expires_at = NULL, started_at = NULL,
            errors = t.errors + (o.verdict = 'retry')::integer,
            last_error = CASE WHEN o.verdict = 'retry' THEN o.error ELSE t.last_error END,
            run_after = now() + CASE WHEN o.verdict = 'retry' AND o.delay > 0
                                     THEN make_interval(secs => o.delay)
                                     ELSE interval '0' END
        FROM owned o
        WHERE t.id = ANY (ARRAY(SELECT r.id FROM owned r WHERE r.verdict IN ('retry', 'released')))
          AND t.id = o.id
    )
    SELECT array_agg(o.id), array_agg(o.verdict),
           array_agg(DISTINCT o.queue) FILTER (
               WHERE o.verdict = 'released' OR (o.verdict = 'retry' AND o.delay <= 0)
                  OR o.limited),
           array_agg(DISTINCT o.queue)
    INTO v_ids, v_verdicts, v_queues, v_touched
    FROM owned o;

    -- A queue under a limit is woken too: a slot in it was freed. (One probe per queue
    -- of the batch, not one per outcome.)
    PERFORM pg_notify({channel}, w.queue)
    FROM (SELECT unnest(v_queues) AS queue
          UNION
          SELECT q.name FROM {schema}.queues q
          WHERE q.name = ANY (v_touched)
            AND {schema}.has_limit(q.max_concurrency, q.max_concurrency_per_key)) w;
    PERFORM {schema}.notify_done(array(
        SELECT u.id FROM unnest(v_ids, v_verdicts) AS u(id, verdict)
        WHERE u.verdict IN ('succeeded', 'failed', 'cancelled')));
    RETURN QUERY SELECT * FROM unnest(v_ids, v_verdicts);
END;
$$;

-- A worker's usual round trip: record the outcomes of a batch (exactly as
-- complete() does, every one fenced), then claim up to p_limit (exactly as claim()
-- does). One statement instead of two; the claim runs after the outcomes are
-- written, so a slot they free under a limit is free to it. Outcome rows carry a
-- verdict; claimed rows carry none.
CREATE OR REPLACE FUNCTION {schema}.complete_and_claim(
    p_worker uuid, p_ids bigint[], p_attempts integer[], p_outcomes text[], p_results jsonb[],
    p_errors text[], p_delays double precision[], p_queues text[], p_names text[],
    p_limit integer, p_lease interval, p_start integer)
RETURNS TABLE (r_id bigint, r_verdict text, r_task_name text, r_queue text, r_payload text,
               r_attempt integer, r_errors integer, r_crashes integer)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    SELECT c.task_id, c.verdict, NULL::text, NULL::text, NULL::text, NULL::integer,
           NULL::integer, NULL::integer
    FROM {schema}.complete(p_worker, p_ids, p_attempts, p_outcomes, p_results, p_errors,
                           p_delays) c;
    RETURN QUERY
    SELECT t.id, NULL::text, t.task_name, t.queue, t.payload::text, t.attempt, t.errors,
           t.crashes
    FROM {schema}.claim(p_worker, p_queues, p_names, p_limit, p_lease, p_start) t;
END;
$$;

-- complete_and_claim, with the schedule and tick of each claimed task (a task a
-- schedule sent), claiming through claim_next when a rate applies to these names or
-- queues (rated work first; else claim() alone, after one look-up), and one last row
-- when a rate limit held work back: verdict 'rate_wait', r_wait the seconds until it
-- can pay for the next task. A claim alone passes no outcomes. complete_and_claim
-- stays as it was for the workers of releases before 0.3.0, which call it; it goes in
-- the contract step.
CREATE OR REPLACE FUNCTION {schema}.complete_then_claim(
    p_worker uuid, p_ids bigint[], p_attempts integer[], p_outcomes text[], p_results jsonb[],
    p_errors text[], p_delays double precision[], p_queues text[], p_names text[],
    p_limit integer, p_lease interval, p_start integer)
RETURNS TABLE (r_id bigint, r_verdict text, r_task_name text, r_queue text, r_payload text,
               r_attempt integer, r_errors integer, r_crashes integer, r_schedule text,
               r_schedule_tick timestamptz, r_wait double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_wait         text;
    v_rated_names  text[];
    v_rated_queues text[];
BEGIN
    PERFORM set_config('tenure.rate_wait', '', true);
    IF cardinality(p_ids) > 0 THEN
        RETURN QUERY
        SELECT c.task_id, c.verdict, NULL::text, NULL::text, NULL::text, NULL::integer,
               NULL::integer, NULL::integer, NULL::text, NULL::timestamptz,
               NULL::double precision
        FROM {schema}.complete(p_worker, p_ids, p_attempts, p_outcomes, p_results, p_errors,
                               p_delays) c;
    END IF;
    IF p_limit <= 0 OR cardinality(p_queues) = 0 THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM {schema}.rate_limits r
                   WHERE (r.scope = 'task' AND r.name = ANY (p_names))
                      OR (r.scope = 'queue' AND r.name = ANY (p_queues))) THEN
        RETURN QUERY
        SELECT t.id, NULL::text, t.task_name, t.queue, t.payload::text, t.attempt, t.errors,
               t.crashes, t.schedule, t.schedule_tick, NULL::double precision
        FROM {schema}.claim(p_worker, p_queues, p_names, p_limit, p_lease, p_start) t;
        RETURN;
    END IF;
    SELECT coalesce(array_agg(DISTINCT r.name) FILTER (WHERE r.scope = 'task'), '{{}}'),
           coalesce(array_agg(DISTINCT r.name) FILTER (WHERE r.scope = 'queue'), '{{}}')
    INTO v_rated_names, v_rated_queues
    FROM {schema}.rate_limits r
    WHERE (r.scope = 'task' AND r.name = ANY (p_names))
       OR (r.scope = 'queue' AND r.name = ANY (p_queues));
    RETURN QUERY
    SELECT t.id, NULL::text, t.task_name, t.queue, t.payload::text, t.attempt, t.errors,
           t.crashes, t.schedule, t.schedule_tick, NULL::double precision
    FROM {schema}.claim_next(p_worker, p_queues, p_names, p_limit, p_lease, p_start,
                             v_rated_names, v_rated_queues) t;
    v_wait := nullif(current_setting('tenure.rate_wait', true), '');
    IF v_wait IS NOT NULL THEN
        RETURN QUERY
        SELECT NULL::bigint, 'rate_wait'::text, NULL::text, NULL::text, NULL::text,
               NULL::integer, NULL::integer, NULL::integer, NULL::text, NULL::timestamptz,
               v_wait::double precision;
    END IF;
END;
$$;

-- Tell whoever waits for results (handle.result()) which of these tasks just
-- finished: one notification on the schema's "done" channel listing the waited-for
-- ids (empty, meaning "look again", when the list would not fit), and none at all
-- when nobody waits.
CREATE OR REPLACE FUNCTION {schema}.notify_done(p_ids bigint[])
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_payload text;
BEGIN
    IF coalesce(array_length(p_ids, 1), 0) = 0
       OR NOT EXISTS (SELECT 1 FROM {schema}.result_waiters) THEN
        RETURN;
    END IF;
    SELECT string_agg(u.id::text, ',') INTO v_payload
    FROM unnest(p_ids) AS u(id)
    WHERE EXISTS (SELECT 1 FROM {schema}.result_waiters w WHERE w.task_id = u.id);
    IF v_payload IS NULL THEN
        RETURN;
    END IF;
    IF length(v_payload) > 7000 THEN
        v_payload := '';
    END IF;
    PERFORM pg_notify({channel} || '_done', v_payload);
END;
$$;
