-- tenure functions: every SQL function the queue runs, in one file.
--
-- Re-applied by `migrate` whenever this file changes (after the numbered
-- migrations), so a function is edited here and nowhere else. {schema} is the
-- quoted schema name, {channel} the quoted NOTIFY channel.

-- The helpers below are plpgsql, not sql: a sql function with a sub-select is not
-- inlined, and is planned again on every call (tens of microseconds per send).

-- The vtime step of one task of a key: 1 / the key's weight in its queue.
CREATE OR REPLACE FUNCTION {schema}.vtime_step(p_queue text, p_key text)
RETURNS double precision
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN 1.0 / coalesce((SELECT (q.key_weights ->> p_key)::double precision
                           FROM {schema}.queues q WHERE q.name = p_queue), 1.0);
END;
$$;

-- Whether a new row of this task name in this queue is under a limit: the sender
-- declared one, or a limit on the name or the queue is published. Flagged rows are
-- claimed through the limit buckets and counted by them.
CREATE OR REPLACE FUNCTION {schema}.is_limited(p_name text, p_queue text, p_declared boolean)
RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN p_declared
        OR EXISTS (SELECT 1 FROM {schema}.limits l
                   WHERE l.task_name = p_name
                     AND (l.max_concurrency IS NOT NULL OR l.max_concurrency_per_key IS NOT NULL))
        OR EXISTS (SELECT 1 FROM {schema}.queues q
                   WHERE q.name = p_queue
                     AND (q.max_concurrency IS NOT NULL OR q.max_concurrency_per_key IS NOT NULL));
END;
$$;

-- Where the next task of a key enters its queue: at the queue's head (the task
-- served next), or one step after the key's own last queued task if that is later.
-- A key with nothing queued starts level with the head; a key with a backlog goes
-- after its own backlog. plpgsql, so its three probes are planned once per session
-- (with sorting off, like the claim, so stale statistics never make them scan).
CREATE OR REPLACE FUNCTION {schema}.vtime_base(p_queue text, p_key text)
RETURNS double precision
LANGUAGE plpgsql STABLE
SET enable_sort = off
SET jit = off
AS $$
BEGIN
    RETURN greatest(
        coalesce(least(
            (SELECT t.vtime FROM {schema}.tasks t
             WHERE t.state = 'queued' AND NOT t.limited AND t.queue = p_queue
             ORDER BY t.priority DESC, t.vtime, t.id LIMIT 1),
            (SELECT t.vtime FROM {schema}.tasks t
             WHERE t.state = 'queued' AND t.limited AND t.queue = p_queue
             ORDER BY t.priority DESC, t.vtime, t.id LIMIT 1)), 0),
        (SELECT t.vtime FROM {schema}.tasks t
         WHERE t.state = 'queued' AND t.queue = p_queue AND t.partition_key = p_key
         ORDER BY t.vtime DESC LIMIT 1)
        + {schema}.vtime_step(p_queue, p_key));
END;
$$;

-- Move due scheduled tasks (delays, retries, crash backoff) into their queues,
-- placing each fairly among its key's work, and wake those queues.
CREATE OR REPLACE FUNCTION {schema}.promote_due(p_max integer)
RETURNS TABLE (queue text, promoted integer)
LANGUAGE plpgsql
SET enable_sort = off
SET enable_nestloop = off
SET enable_mergejoin = off
SET jit = off
AS $$
DECLARE
    v_queues text[];
    v_counts integer[];
BEGIN
    WITH due AS MATERIALIZED (
        SELECT t.id, t.queue, t.partition_key,
               row_number() OVER (PARTITION BY t.queue, t.partition_key
                                  ORDER BY t.run_after, t.id) AS rn
        FROM (SELECT s.id, s.queue, s.partition_key, s.run_after FROM {schema}.tasks s
              WHERE s.state = 'scheduled' AND s.run_after <= now()
              ORDER BY s.run_after LIMIT p_max FOR UPDATE SKIP LOCKED) t
    ),
    keys AS MATERIALIZED (  -- one vtime_base() per key, not one per due row
        SELECT k.queue, k.partition_key,
               {schema}.vtime_base(k.queue, k.partition_key) AS base,
               {schema}.vtime_step(k.queue, k.partition_key) AS step
        FROM (SELECT DISTINCT d.queue, d.partition_key FROM due d) k
    ),
    placed AS MATERIALIZED (
        SELECT d.id, k.base + (d.rn - 1) * k.step AS vtime
        FROM due d JOIN keys k ON k.queue = d.queue AND k.partition_key = d.partition_key
    ),
    -- The due rows are reached through the primary key (id = ANY), and joined to their
    -- places by hash (no nested loops here): the cost is the batch's whatever the
    -- statistics say.
    moved AS (
        UPDATE {schema}.tasks t
        SET state = 'queued', vtime = p.vtime
        FROM placed p
        WHERE t.id = ANY (ARRAY(SELECT d.id FROM due d)) AND t.id = p.id
        RETURNING t.queue
    )
    SELECT array_agg(m.queue), array_agg(m.n)
    INTO v_queues, v_counts
    FROM (SELECT moved.queue, count(*)::integer AS n FROM moved GROUP BY moved.queue) m;

    PERFORM pg_notify({channel}, q) FROM unnest(v_queues) q;
    RETURN QUERY SELECT * FROM unnest(v_queues, v_counts);
END;
$$;

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
    quarantined AS (
        DELETE FROM {schema}.tasks t
        WHERE t.id = ANY (v_expired) AND (t.crashes + 1 >= t.max_crashes OR t.cancel_requested)
        RETURNING t.*
    ),
    moved AS (
        INSERT INTO {schema}.finished_tasks (id, task_name, queue, payload, priority, partition_key,
                                             state, attempt, errors, crashes, created_at,
                                             last_error, idempotency_key, max_attempts,
                                             max_crashes, lease, limited)
        SELECT q.id, q.task_name, q.queue, q.payload, q.priority, nullif(q.partition_key, ''),
               CASE WHEN q.cancel_requested THEN 'cancelled' ELSE 'quarantined' END,
               q.attempt, q.errors, q.crashes + 1, q.created_at,
               CASE WHEN q.cancel_requested
                    THEN 'cancelled: its worker stopped renewing before it could stop it'
                    ELSE 'quarantined: the lease expired ' || (q.crashes + 1)
                         || ' times (the task kills or stalls its worker)' END,
               q.idempotency_key, q.max_attempts, q.max_crashes, q.lease, q.limited
        FROM quarantined q
        RETURNING id, state
    ),
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

-- Open one limit bucket for this claim: take its transaction advisory lock (or
-- report -1 if another claimer holds it), expire its stale leases so a late
-- renewal cannot revive one, and return how many more attempts it may start.
-- Every row a limit applies to is flagged `limited` (see is_limited; a claim
-- through a bucket flags what it takes), so only flagged rows are counted.
-- Kinds: 'q' queue, 'qk' queue + key, 't' task name, 'tk' task name + key.
CREATE OR REPLACE FUNCTION {schema}.bucket_open(p_kind text, p_queue text, p_task_name text, p_key text,
                                     p_limit integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_running integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(
            hashtext({channel} || ':' || p_kind),
            hashtext(coalesce(p_queue, '') || '/' || coalesce(p_task_name, '') || '/'
                     || coalesce(p_key, ''))) THEN
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
    v_name text := p_kind || ':' || coalesce(p_queue, '') || '/' || coalesce(p_task_name, '')
                   || '/' || coalesce(p_key, '');
BEGIN
    IF p_caps ? v_name THEN
        RETURN p_caps;
    END IF;
    RETURN p_caps || jsonb_build_object(
        v_name, {schema}.bucket_open(p_kind, p_queue, p_task_name, p_key, p_limit));
END;
$$;

-- The claim path for work under limits: walk the queue's candidates in fair order
-- and take each one only if every bucket it belongs to has room. A bucket another
-- claimer holds counts as full: that claimer takes what the bucket has room for,
-- and the next freed slot wakes the queue again. When a task name's bucket or a
-- partition key's bucket is full, the walk starts over without that name or key,
-- so a full bucket never costs a scan of its backlog.
CREATE OR REPLACE FUNCTION {schema}.claim_limited(p_worker uuid, p_queue text, p_names text[],
                                                  p_want integer, p_lease interval,
                                                  p_limited boolean)
RETURNS SETOF {schema}.tasks
LANGUAGE plpgsql
SET enable_sort = off
SET jit = off
AS $$
DECLARE
    v_q          record;
    v_lim        record;
    v_cand       record;
    v_row        {schema}.tasks;
    v_caps       jsonb := '{{}}';
    v_names      text[];
    v_name       text;
    v_ok         boolean;
    v_restart    boolean;
    v_taken      integer := 0;
    v_scanned    integer := 0;
    v_off_names  text[] := ARRAY[]::text[];
    v_off_keys   text[] := ARRAY[]::text[];
    v_name_cap   text;
    v_key_cap    text;
BEGIN
    SELECT * INTO v_q FROM {schema}.queues q WHERE q.name = p_queue;
    IF v_q.max_concurrency IS NOT NULL THEN
        v_caps := {schema}.bucket_visit(v_caps, 'q', p_queue, NULL, NULL, v_q.max_concurrency);
        IF (v_caps ->> ('q:' || p_queue || '//'))::integer <= 0 THEN
            RETURN;
        END IF;
    END IF;
    LOOP
        v_restart := false;
        FOR v_cand IN EXECUTE
            'SELECT t.id, t.task_name, t.partition_key, t.limited FROM {schema}.tasks t '
            || 'WHERE t.state = ''queued'' AND '
            || CASE WHEN p_limited THEN 't.limited' ELSE 'NOT t.limited' END
            || ' AND t.queue = $1 AND t.task_name = ANY ($2)'
            || ' AND NOT (t.task_name = ANY ($3)) AND NOT (t.partition_key = ANY ($4))'
            || ' ORDER BY t.priority DESC, t.vtime, t.id'
            USING p_queue, p_names, v_off_names, v_off_keys
        LOOP
            EXIT WHEN v_taken >= p_want OR v_scanned >= 2000;
            v_scanned := v_scanned + 1;
            v_names := ARRAY[]::text[];
            v_name_cap := NULL;
            v_key_cap := NULL;
            IF v_q.max_concurrency IS NOT NULL THEN
                v_names := v_names || ('q:' || p_queue || '//');
            END IF;
            IF v_q.max_concurrency_per_key IS NOT NULL THEN
                v_key_cap := 'qk:' || p_queue || '//' || v_cand.partition_key;
                v_caps := {schema}.bucket_visit(v_caps, 'qk', p_queue, NULL, v_cand.partition_key,
                                                v_q.max_concurrency_per_key);
                v_names := v_names || v_key_cap;
            END IF;
            IF v_cand.limited THEN
                SELECT l.max_concurrency, l.max_concurrency_per_key INTO v_lim
                FROM {schema}.limits l WHERE l.task_name = v_cand.task_name;
                IF v_lim.max_concurrency IS NOT NULL THEN
                    v_name_cap := 't:/' || v_cand.task_name || '/';
                    v_caps := {schema}.bucket_visit(v_caps, 't', NULL, v_cand.task_name, NULL,
                                                    v_lim.max_concurrency);
                    v_names := v_names || v_name_cap;
                END IF;
                IF v_lim.max_concurrency_per_key IS NOT NULL THEN
                    v_caps := {schema}.bucket_visit(v_caps, 'tk', NULL, v_cand.task_name,
                                                    v_cand.partition_key,
                                                    v_lim.max_concurrency_per_key);
                    v_names := v_names
                               || ('tk:/' || v_cand.task_name || '/' || v_cand.partition_key);
                END IF;
            END IF;
            v_ok := true;
            FOREACH v_name IN ARRAY v_names LOOP
                IF (v_caps ->> v_name)::integer <= 0 THEN
                    v_ok := false;
                END IF;
            END LOOP;
            IF v_ok THEN
                UPDATE {schema}.tasks t
                SET state = 'running', attempt = t.attempt + 1, lease_owner = p_worker,
                    lease_expires_at = clock_timestamp() + greatest(t.lease, p_lease),
                    started_at = clock_timestamp(), limited = true
                WHERE t.id = (SELECT s.id FROM {schema}.tasks s
                              WHERE s.id = v_cand.id AND s.state = 'queued'
                              FOR UPDATE SKIP LOCKED)
                RETURNING t.* INTO v_row;
                IF FOUND THEN
                    RETURN NEXT v_row;
                    v_taken := v_taken + 1;
                    FOREACH v_name IN ARRAY v_names LOOP
                        v_caps := jsonb_set(v_caps, ARRAY[v_name],
                                            to_jsonb((v_caps ->> v_name)::integer - 1));
                    END LOOP;
                END IF;
            END IF;
            EXIT WHEN v_q.max_concurrency IS NOT NULL
                      AND (v_caps ->> ('q:' || p_queue || '//'))::integer <= 0;
            IF v_name_cap IS NOT NULL AND (v_caps ->> v_name_cap)::integer <= 0 THEN
                v_off_names := v_off_names || v_cand.task_name;
                v_restart := true;
                EXIT;
            END IF;
            IF v_key_cap IS NOT NULL AND (v_caps ->> v_key_cap)::integer <= 0 THEN
                v_off_keys := v_off_keys || v_cand.partition_key;
                v_restart := true;
                EXIT;
            END IF;
        END LOOP;
        EXIT WHEN NOT v_restart OR v_taken >= p_want OR v_scanned >= 2000;
    END LOOP;
END;
$$;

-- Claim up to p_limit tasks for p_worker from p_queues, restricted to the task
-- names that worker can run. Queues are served weighted round-robin starting at
-- p_start: each gets its weighted share first, then any queue fills what is left.
-- Within a queue, work is taken by priority, then fair virtual time across
-- partition keys. Unlimited work in an unlimited queue is claimed in one set-based
-- statement; everything under a limit goes through claim_limited. Sorting is
-- switched off so the planner always walks the claim index in order, even when the
-- table's statistics are stale after a burst (a sort would read the whole
-- backlog on every claim). Its statements are planned once per session (a generic
-- plan: replanning the claim cost a quarter of a millisecond per call). That plan
-- cannot know the batch size, so the picked rows are locked first and then reached by
-- primary key alone (id = ANY), joined to nothing that could make it scan the table
-- (hash and merge joins stay off for the small lookups beside it), and JIT is off: that
-- plan's cost grows with the backlog (it assumes a tenth of it is wanted), and past
-- jit_above_cost each claim of a deep backlog would compile code for ten milliseconds. Start and
-- expiry use the statement's clock, not the transaction's, so an attempt never
-- appears to start before the previous owner's outcome was written. Its signature
-- and result type stay as they are: an older version re-applying its own functions
-- (a rollback) must be able to replace it.
CREATE OR REPLACE FUNCTION {schema}.claim(p_worker uuid, p_queues text[], p_names text[], p_limit integer,
                               p_lease interval, p_start integer)
RETURNS SETOF {schema}.tasks
LANGUAGE plpgsql
SET enable_sort = off
SET plan_cache_mode = force_generic_plan
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $$
DECLARE
    v_left    integer := p_limit;
    v_nq      integer := coalesce(array_length(p_queues, 1), 0);
    v_weights integer[];
    v_total   integer;
    v_slot    integer;
    v_share   integer;
    v_got     integer;
    v_queue   text;
    v_q       record;
    v_pass    integer;
    v_free    text[];
BEGIN
    IF v_left <= 0 OR v_nq = 0 THEN
        RETURN;
    END IF;
    SELECT array_agg(coalesce(q.weight, 1) ORDER BY u.ord), sum(coalesce(q.weight, 1))
    INTO v_weights, v_total
    FROM unnest(p_queues) WITH ORDINALITY AS u(name, ord)
    LEFT JOIN {schema}.queues q ON q.name = u.name;
    -- Names under a limit never take the set-based path, whatever their rows say.
    SELECT coalesce(array_agg(n.name), ARRAY[]::text[]) INTO v_free
    FROM unnest(p_names) AS n(name)
    WHERE NOT EXISTS (SELECT 1 FROM {schema}.limits l
                      WHERE l.task_name = n.name
                        AND (l.max_concurrency IS NOT NULL
                             OR l.max_concurrency_per_key IS NOT NULL));

    FOR v_pass IN 1..2 LOOP
        FOR i IN 0 .. v_nq - 1 LOOP
            EXIT WHEN v_left <= 0;
            v_slot := 1 + mod(p_start + i, v_nq);
            v_queue := p_queues[v_slot];
            v_share := CASE WHEN v_pass = 1
                            THEN ceil(p_limit::numeric * v_weights[v_slot] / v_total)::integer
                            ELSE v_left END;
            v_share := least(v_share, v_left);
            SELECT * INTO v_q FROM {schema}.queues q WHERE q.name = v_queue;
            CONTINUE WHEN v_q.paused IS TRUE;
            IF v_q.max_concurrency IS NULL AND v_q.max_concurrency_per_key IS NULL THEN
                -- The picked rows are locked first and then reached through the primary
                -- key (id = ANY), joined to nothing: whatever the statistics say, the
                -- claim reads the head of its index and its own batch. They are
                -- returned in claim order.
                RETURN QUERY
                WITH claimed AS (
                    UPDATE {schema}.tasks t
                    SET state = 'running', attempt = t.attempt + 1, lease_owner = p_worker,
                        lease_expires_at = clock_timestamp() + greatest(t.lease, p_lease),
                        started_at = clock_timestamp()
                    WHERE t.id = ANY (ARRAY(
                        SELECT p.id FROM {schema}.tasks p
                        WHERE p.state = 'queued' AND NOT p.limited AND p.queue = v_queue
                          AND p.task_name = ANY (v_free)
                        ORDER BY p.priority DESC, p.vtime, p.id
                        LIMIT v_share
                        FOR UPDATE SKIP LOCKED))
                    RETURNING t.*
                )
                SELECT * FROM claimed c ORDER BY c.priority DESC, c.vtime, c.id;
            ELSE
                RETURN QUERY SELECT * FROM {schema}.claim_limited(
                    p_worker, v_queue, p_names, v_share, p_lease, false);
            END IF;
            GET DIAGNOSTICS v_got = ROW_COUNT;
            v_left := v_left - v_got;
            v_share := v_share - v_got;
            IF v_share > 0 AND EXISTS (
                SELECT 1 FROM {schema}.tasks t
                WHERE t.state = 'queued' AND t.limited AND t.queue = v_queue) THEN
                RETURN QUERY SELECT * FROM {schema}.claim_limited(
                    p_worker, v_queue, p_names, v_share, p_lease, true);
                GET DIAGNOSTICS v_got = ROW_COUNT;
                v_left := v_left - v_got;
            END IF;
        END LOOP;
        EXIT WHEN v_nq = 1;
    END LOOP;
END;
$$;

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
    finished AS (
        INSERT INTO {schema}.finished_tasks (id, task_name, queue, payload, priority, partition_key,
                                             state, attempt, errors, crashes, created_at,
                                             last_error, result, idempotency_key, max_attempts,
                                             max_crashes, lease, limited)
        SELECT r.id, r.task_name, r.queue, r.payload, r.priority, nullif(r.partition_key, ''),
               o.verdict, r.attempt, r.errors + (o.verdict = 'failed')::integer, r.crashes,
               r.created_at, coalesce(o.error, r.last_error), o.result, r.idempotency_key,
               r.max_attempts, r.max_crashes, r.lease, r.limited
        FROM removed r JOIN owned o ON o.id = r.id
    ),
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
            AND (q.max_concurrency IS NOT NULL OR q.max_concurrency_per_key IS NOT NULL)) w;
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
    WITH removed AS (
        DELETE FROM {schema}.tasks t WHERE t.id = p_id RETURNING t.*
    )
    INSERT INTO {schema}.finished_tasks (id, task_name, queue, payload, priority, partition_key,
                                         state, attempt, errors, crashes, created_at, last_error,
                                         idempotency_key, max_attempts, max_crashes, lease,
                                         limited)
    SELECT r.id, r.task_name, r.queue, r.payload, r.priority, nullif(r.partition_key, ''),
           'cancelled', r.attempt, r.errors, r.crashes, r.created_at,
           'cancelled before it started', r.idempotency_key, r.max_attempts, r.max_crashes,
           r.lease, r.limited
    FROM removed r;
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
