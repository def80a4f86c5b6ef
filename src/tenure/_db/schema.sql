-- tenure schema: the truth. The numbered migrations must produce exactly this
-- (tests/test_schema.py proves it). {schema} and {channel} are filled in as in
-- the migrations.

CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE {schema}.migrations (
    name       text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE {schema}.task_ids;

-- Work that is waiting or running. Finished rows move to finished_tasks so this
-- table stays small and claiming stays fast however much history accumulates.
CREATE TABLE {schema}.tasks (
    id               bigint PRIMARY KEY DEFAULT nextval('{schema}.task_ids'),
    task_name        text NOT NULL,
    queue            text NOT NULL,
    payload          jsonb NOT NULL,
    priority         integer NOT NULL DEFAULT 0,
    partition_key    text,
    state            text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running')),
    attempt          integer NOT NULL DEFAULT 0,   -- fencing token: bumped by every claim
    errors           integer NOT NULL DEFAULT 0,   -- attempts that ended in error or timeout
    crashes          integer NOT NULL DEFAULT 0,   -- attempts whose lease expired
    max_attempts     integer NOT NULL,
    max_crashes      integer NOT NULL,
    limited          boolean NOT NULL DEFAULT false,
    lease            interval,                      -- per-task lease override
    run_after        timestamptz NOT NULL DEFAULT now(),
    lease_owner      uuid,
    lease_expires_at timestamptz,
    started_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    idempotency_key  text,
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);

CREATE INDEX tasks_claim_idx ON {schema}.tasks (queue, priority DESC, run_after, id)
    WHERE state = 'queued' AND NOT limited;
CREATE INDEX tasks_claim_limited_idx ON {schema}.tasks (task_name, priority DESC, run_after, id)
    WHERE state = 'queued' AND limited;
CREATE INDEX tasks_running_owner_idx ON {schema}.tasks (lease_owner) WHERE state = 'running';
CREATE INDEX tasks_running_expiry_idx ON {schema}.tasks (lease_expires_at) WHERE state = 'running';
CREATE INDEX tasks_running_limited_idx ON {schema}.tasks (task_name)
    WHERE state = 'running' AND limited;

-- Finished work: succeeded, failed for good, cancelled or quarantined.
CREATE TABLE {schema}.finished_tasks (
    id              bigint PRIMARY KEY,
    task_name       text NOT NULL,
    queue           text NOT NULL,
    payload         jsonb NOT NULL,
    priority        integer NOT NULL,
    partition_key   text,
    state           text NOT NULL
                    CHECK (state IN ('succeeded', 'failed', 'cancelled', 'quarantined')),
    attempt         integer NOT NULL,
    errors          integer NOT NULL,
    crashes         integer NOT NULL,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    result          jsonb,
    idempotency_key text
);

CREATE INDEX finished_tasks_finished_at_idx ON {schema}.finished_tasks (finished_at);
CREATE INDEX finished_tasks_unsuccessful_idx ON {schema}.finished_tasks (queue, state)
    WHERE state <> 'succeeded';

-- One row per attempt, written when the attempt ends (by its worker, or by the
-- reaper when its lease expired).
CREATE TABLE {schema}.attempts (
    task_id    bigint NOT NULL,
    attempt    integer NOT NULL,
    worker_id  uuid NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz NOT NULL,
    outcome    text NOT NULL CHECK (outcome IN ('succeeded', 'error', 'lease_expired',
                                                 'released', 'timed_out', 'cancelled')),
    error      text,
    PRIMARY KEY (task_id, attempt)
);

CREATE INDEX attempts_ended_at_idx ON {schema}.attempts (ended_at);

CREATE TABLE {schema}.workers (
    id           uuid PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    queues       text[] NOT NULL,
    concurrency  integer NOT NULL,
    version      text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz,
    state        text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'draining', 'gone'))
);

CREATE INDEX workers_live_idx ON {schema}.workers (heartbeat_at) WHERE state <> 'gone';

-- Fleet-wide concurrency limits by task name, written by workers from their registry.
-- NULL means the limit was lifted: rows sent while it held are claimed freely.
CREATE TABLE {schema}.limits (
    task_name       text PRIMARY KEY,
    max_concurrency integer CHECK (max_concurrency > 0),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {schema}.idempotency_keys (
    task_name  text NOT NULL,
    key        text NOT NULL,
    task_id    bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_name, key)
);

-- Turn expired leases back into claimable work. The expired attempt is recorded
-- as 'lease_expired', the crash counter bumped, and a task that reached its crash
-- cap is quarantined instead of crash-looping the fleet. The first crash is taken
-- over at once; repeated ones back off exponentially with jitter.
CREATE FUNCTION {schema}.expire_leases(p_task_name text, p_max integer)
RETURNS TABLE (task_id bigint, verdict text)
LANGUAGE plpgsql AS $$
DECLARE
    v_requeued    bigint[];
    v_quarantined bigint[];
    v_queues      text[];
BEGIN
    WITH expired AS (
        SELECT t.id
        FROM {schema}.tasks t
        WHERE t.state = 'running'
          AND t.lease_expires_at < now()
          AND (p_task_name IS NULL OR t.task_name = p_task_name)
        ORDER BY t.lease_expires_at
        LIMIT p_max
        FOR UPDATE SKIP LOCKED
    ),
    recorded AS (
        INSERT INTO {schema}.attempts (task_id, attempt, worker_id, started_at, ended_at, outcome,
                                       error)
        SELECT t.id, t.attempt, t.lease_owner, t.started_at, t.lease_expires_at, 'lease_expired',
               'lease expired: worker ' || t.lease_owner || ' stopped renewing'
        FROM {schema}.tasks t JOIN expired e ON e.id = t.id
    ),
    quarantined AS (
        DELETE FROM {schema}.tasks t
        USING expired e
        WHERE t.id = e.id AND t.crashes + 1 >= t.max_crashes
        RETURNING t.*
    ),
    moved AS (
        INSERT INTO {schema}.finished_tasks (id, task_name, queue, payload, priority, partition_key,
                                             state, attempt, errors, crashes, created_at,
                                             last_error, idempotency_key)
        SELECT q.id, q.task_name, q.queue, q.payload, q.priority, q.partition_key, 'quarantined',
               q.attempt, q.errors, q.crashes + 1, q.created_at,
               'quarantined: the lease expired ' || (q.crashes + 1)
                   || ' times (the task kills or stalls its worker)',
               q.idempotency_key
        FROM quarantined q
        RETURNING id
    ),
    requeued AS (
        UPDATE {schema}.tasks t
        SET state = 'queued',
            lease_owner = NULL,
            lease_expires_at = NULL,
            started_at = NULL,
            crashes = t.crashes + 1,
            last_error = 'lease expired: worker ' || t.lease_owner || ' stopped renewing',
            run_after = now() + CASE WHEN t.crashes = 0 THEN interval '0'
                                     ELSE least(60, 2 ^ (t.crashes - 1)) * (0.75 + random() / 2)
                                          * interval '1 second' END
        FROM expired e
        WHERE t.id = e.id AND t.crashes + 1 < t.max_crashes
        RETURNING t.id, t.queue, t.run_after
    )
    SELECT (SELECT array_agg(r.id) FROM requeued r),
           (SELECT array_agg(m.id) FROM moved m),
           (SELECT array_agg(DISTINCT r.queue) FROM requeued r WHERE r.run_after <= now())
    INTO v_requeued, v_quarantined, v_queues;

    PERFORM pg_notify({channel}, q) FROM unnest(v_queues) q;
    RETURN QUERY
        SELECT r, 'requeued'::text FROM unnest(v_requeued) r
        UNION ALL
        SELECT q, 'quarantined'::text FROM unnest(v_quarantined) q;
END;
$$;

-- Claim up to p_limit tasks for p_worker from p_queues, restricted to the task
-- names that worker can run. Limited task names are claimed under a transaction
-- advisory lock per name: expired leases of that name are expired first (so a
-- late renewal cannot revive them), then running attempts are counted, so
-- max_concurrency holds exactly across the fleet. Unlimited work is taken queue
-- by queue, starting at p_start, with a fair share per queue before any queue
-- gets the remainder. Start and expiry use the statement's clock, not the
-- transaction's, so an attempt never appears to start before the previous
-- owner's outcome was written.
CREATE FUNCTION {schema}.claim(p_worker uuid, p_queues text[], p_names text[], p_limit integer,
                               p_lease interval, p_start integer)
RETURNS SETOF {schema}.tasks
LANGUAGE plpgsql AS $$
DECLARE
    v_left    integer := p_limit;
    v_nq      integer := coalesce(array_length(p_queues, 1), 0);
    v_share   integer;
    v_take    integer;
    v_got     integer;
    v_running integer;
    v_queue   text;
    v_lim     record;
    v_pass    integer;
BEGIN
    IF v_left <= 0 OR v_nq = 0 THEN
        RETURN;
    END IF;

    FOR v_lim IN
        SELECT l.task_name, l.max_concurrency
        FROM {schema}.limits l
        WHERE l.task_name = ANY (p_names)
          AND EXISTS (SELECT 1 FROM {schema}.tasks t
                      WHERE t.state = 'queued' AND t.limited AND t.task_name = l.task_name
                        AND t.queue = ANY (p_queues) AND t.run_after <= now())
        ORDER BY l.task_name
    LOOP
        EXIT WHEN v_left <= 0;
        IF v_lim.max_concurrency IS NULL THEN
            v_take := v_left;
        ELSE
            CONTINUE WHEN NOT pg_try_advisory_xact_lock(hashtext({channel} || ':limit'),
                                                        hashtext(v_lim.task_name));
            PERFORM {schema}.expire_leases(v_lim.task_name, 1000);
            SELECT count(*) INTO v_running
            FROM {schema}.tasks t
            WHERE t.state = 'running' AND t.limited AND t.task_name = v_lim.task_name;
            v_take := least(v_left, v_lim.max_concurrency - v_running);
        END IF;
        CONTINUE WHEN v_take <= 0;
        RETURN QUERY
        WITH picked AS (
            SELECT t.id FROM {schema}.tasks t
            WHERE t.state = 'queued' AND t.limited AND t.task_name = v_lim.task_name
              AND t.queue = ANY (p_queues) AND t.run_after <= now()
            ORDER BY t.priority DESC, t.run_after, t.id
            LIMIT v_take
            FOR UPDATE SKIP LOCKED
        )
        UPDATE {schema}.tasks t
        SET state = 'running', attempt = t.attempt + 1, lease_owner = p_worker,
            lease_expires_at = clock_timestamp() + coalesce(t.lease, p_lease),
            started_at = clock_timestamp()
        FROM picked WHERE t.id = picked.id
        RETURNING t.*;
        GET DIAGNOSTICS v_got = ROW_COUNT;
        v_left := v_left - v_got;
    END LOOP;

    -- Pass 1 gives each queue its share; pass 2 lets any queue fill what is left.
    FOR v_pass IN 1..2 LOOP
        v_share := CASE WHEN v_pass = 1 THEN (v_left + v_nq - 1) / v_nq ELSE v_left END;
        FOR i IN 0 .. v_nq - 1 LOOP
            EXIT WHEN v_left <= 0;
            v_queue := p_queues[1 + mod(p_start + i, v_nq)];
            RETURN QUERY
            WITH picked AS (
                SELECT t.id FROM {schema}.tasks t
                WHERE t.state = 'queued' AND NOT t.limited AND t.queue = v_queue
                  AND t.run_after <= now() AND t.task_name = ANY (p_names)
                ORDER BY t.priority DESC, t.run_after, t.id
                LIMIT least(v_share, v_left)
                FOR UPDATE SKIP LOCKED
            )
            UPDATE {schema}.tasks t
            SET state = 'running', attempt = t.attempt + 1, lease_owner = p_worker,
                lease_expires_at = clock_timestamp() + coalesce(t.lease, p_lease),
                started_at = clock_timestamp()
            FROM picked WHERE t.id = picked.id
            RETURNING t.*;
            GET DIAGNOSTICS v_got = ROW_COUNT;
            v_left := v_left - v_got;
        END LOOP;
        EXIT WHEN v_nq = 1;
    END LOOP;
END;
$$;

-- Record the outcomes of a batch of attempts, each fenced on (id, attempt, owner):
-- a row this worker no longer owns is left alone and missing from the result.
-- Outcomes: succeeded, error, timed_out (retried with p_delays seconds of backoff
-- until max_attempts), discarded (failed at once), cancelled, released (handed
-- back without spending an attempt).
CREATE FUNCTION {schema}.complete(p_worker uuid, p_ids bigint[], p_attempts integer[],
                                  p_outcomes text[], p_results jsonb[], p_errors text[],
                                  p_delays double precision[])
RETURNS TABLE (task_id bigint, verdict text)
LANGUAGE plpgsql AS $$
DECLARE
    v_ids      bigint[];
    v_verdicts text[];
    v_queues   text[];
BEGIN
    WITH input AS (
        SELECT * FROM unnest(p_ids, p_attempts, p_outcomes, p_results, p_errors, p_delays)
            AS u(id, attempt, outcome, result, error, delay)
    ),
    owned AS (
        SELECT t.id, t.attempt, t.started_at, t.queue, i.outcome, i.result, i.error, i.delay,
               CASE
                   WHEN i.outcome = 'succeeded' THEN 'succeeded'
                   WHEN i.outcome = 'cancelled' THEN 'cancelled'
                   WHEN i.outcome = 'released' THEN 'released'
                   WHEN i.outcome = 'discarded' THEN 'failed'
                   WHEN t.errors + 1 >= t.max_attempts THEN 'failed'
                   ELSE 'retry'
               END AS verdict
        FROM {schema}.tasks t
        JOIN input i ON i.id = t.id AND i.attempt = t.attempt
        WHERE t.state = 'running' AND t.lease_owner = p_worker
        FOR UPDATE OF t
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
        USING owned o
        WHERE t.id = o.id AND o.verdict IN ('succeeded', 'failed', 'cancelled')
        RETURNING t.*, o.verdict, o.result, o.error
    ),
    finished AS (
        INSERT INTO {schema}.finished_tasks (id, task_name, queue, payload, priority, partition_key,
                                             state, attempt, errors, crashes, created_at,
                                             last_error, result, idempotency_key)
        SELECT r.id, r.task_name, r.queue, r.payload, r.priority, r.partition_key, r.verdict,
               r.attempt, r.errors + (r.verdict = 'failed')::integer, r.crashes, r.created_at,
               coalesce(r.error, r.last_error), r.result, r.idempotency_key
        FROM removed r
    ),
    requeued AS (
        UPDATE {schema}.tasks t
        SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL, started_at = NULL,
            errors = t.errors + (o.verdict = 'retry')::integer,
            last_error = CASE WHEN o.verdict = 'retry' THEN o.error ELSE t.last_error END,
            run_after = now() + CASE WHEN o.verdict = 'retry'
                                     THEN make_interval(secs => o.delay)
                                     ELSE interval '0' END
        FROM owned o
        WHERE t.id = o.id AND o.verdict IN ('retry', 'released')
    )
    SELECT array_agg(o.id), array_agg(o.verdict),
           array_agg(DISTINCT o.queue) FILTER (WHERE o.verdict = 'released'
                                                   OR (o.verdict = 'retry' AND o.delay <= 0))
    INTO v_ids, v_verdicts, v_queues
    FROM owned o;

    PERFORM pg_notify({channel}, q) FROM unnest(v_queues) q;
    RETURN QUERY SELECT * FROM unnest(v_ids, v_verdicts);
END;
$$;
