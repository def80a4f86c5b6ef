-- Rate limits (tenure/rates.py; migration 0010 has the tables): the limits in force,
-- the claim of work under a rate, and a task's request to slow its limits down.

-- The rate limits in force: where an operator set a limit the code also declares, the
-- operator's row wins until it is cleared.
CREATE OR REPLACE FUNCTION {schema}.rates_in_force()
RETURNS SETOF {schema}.rate_limits
LANGUAGE sql STABLE AS $$
    SELECT DISTINCT ON (r.scope, r.name, r.kind, r.key) r.*
    FROM {schema}.rate_limits r
    ORDER BY r.scope, r.name, r.kind, r.key, r.source = 'operator' DESC
$$;

-- Whether a task name has a rate limit of its own (an operator's or the code's): its
-- rows are sent flagged `limited`, so the claim of rated work finds them in the index
-- of limited work and never has to read past unrated work to find them. plpgsql, like
-- is_limited: its look-up is planned once per session.
CREATE OR REPLACE FUNCTION {schema}.is_rated(p_name text)
RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM {schema}.rate_limits r
                   WHERE r.scope = 'task' AND r.name = p_name);
END;
$$;

-- The share of its rate a bucket refills at, at p_now: slow_factor while a task's
-- request to slow down lasts, else all of it.
CREATE OR REPLACE FUNCTION {schema}.rate_factor(p_slow_factor double precision,
                                                p_slow_until timestamptz, p_now timestamptz)
RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_slow_until > p_now THEN p_slow_factor ELSE 1.0 END
$$;

-- A bucket's tokens at p_now: what it held at p_at, refilled at its rate (times the
-- factor) and never above its burst (times the factor, at least one unit).
CREATE OR REPLACE FUNCTION {schema}.rate_tokens(p_tokens double precision, p_at timestamptz,
                                                p_now timestamptz,
                                                p_per_second double precision,
                                                p_burst double precision,
                                                p_factor double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT least(greatest(1.0, p_burst * p_factor),
                 p_tokens + p_per_second * p_factor
                            * greatest(0.0, extract(epoch FROM p_now - p_at)::double precision))
$$;

-- Claim up to p_want of the queue's tasks of these names, every one under a rate
-- limit of its name or of the queue (and maybe under concurrency limits too). The
-- queue's head is read once, unlocked, in claim order. The buckets its tasks belong
-- to are locked in one order (waiting only in the first rated queue of a transaction,
-- skipping a locked bucket after, so two claims can never wait on each other) and
-- refilled to the clock read after the locks. Then each task in turn is taken if every
-- rate bucket it belongs to holds its cost and every concurrency bucket has a slot. A
-- bucket that cannot pay for a task serves no later task in this claim, so a dear task
-- is not passed over for ever by cheap ones behind it; a key's bucket holds back only
-- its key. A task whose units were spent already (a start after a takeover or a
-- handed-back prefetch: its error count is the one it paid at) spends nothing. The
-- chosen rows are claimed as claim() claims, and each bucket is written once. A bucket
-- that held a task back sets tenure.rate_wait, the seconds until it can pay for it,
-- for the worker's next claim.
CREATE OR REPLACE FUNCTION {schema}.claim_rated(p_worker uuid, p_queue text, p_names text[],
                                                p_want integer, p_lease interval)
RETURNS SETOF {schema}.tasks
LANGUAGE plpgsql
SET enable_sort = off
SET jit = off
AS $$
DECLARE
    v_scan      integer;
    v_now       timestamptz := clock_timestamp();
    v_first     boolean := coalesce(current_setting('tenure.rate_locked', true), '') = '';
    v_q         record;
    v_lim       record;
    v_wait      double precision;
    v_conc_names text[];
    v_conc      boolean;
    v_caps      jsonb := '{{}}';
    v_cap_names text[];
    v_cap       text;
    c_id bigint[]; c_name text[]; c_key text[]; c_cost integer[]; c_pays boolean[];
    c_rt integer[]; c_rtk integer[]; c_rq integer[]; c_rqk integer[];
    n_scope text[]; n_name text[]; n_per_key boolean[]; n_key text[];
    n_rate double precision[]; n_burst double precision[];
    b_tok double precision[]; b_rate double precision[]; b_burst double precision[];
    b_spent double precision[]; b_blocked boolean[]; b_mine boolean[]; b_locked record;
    v_locked    bigint[];
    v_chosen    bigint[] := ARRAY[]::bigint[];
    v_paying    bigint[] := ARRAY[]::bigint[];
    v_taken     integer := 0;
    v_got       integer;
    v_need      double precision;
    v_ok        boolean;
    v_b         integer;
    v_i         integer;
    v_missed    bigint;
    v_queue_rated boolean;
BEGIN
    SELECT * INTO v_q FROM {schema}.queues q WHERE q.name = p_queue;
    SELECT coalesce(array_agg(l.task_name), ARRAY[]::text[]) INTO v_conc_names
    FROM {schema}.limits l
    WHERE l.task_name = ANY (p_names)
      AND {schema}.has_limit(l.max_concurrency, l.max_concurrency_per_key);
    IF v_q.max_concurrency IS NOT NULL THEN
        v_caps := {schema}.bucket_visit(v_caps, 'q', p_queue, NULL, NULL, v_q.max_concurrency);
        IF (v_caps ->> {schema}.bucket_name('q', p_queue, NULL, NULL))::integer <= 0 THEN
            RETURN;
        END IF;
    END IF;

    -- How far to read: a key at its limit holds back only its key, so under a limit
    -- per key the head is read 8 times as deep as the claim (at least 200 rows, at most
    -- 2,000) to find the other keys' work; under limits on whole names and queues
    -- only, deep enough for each name.
    IF v_q.max_concurrency_per_key IS NOT NULL
       OR EXISTS (SELECT 1 FROM {schema}.limits l
                  WHERE l.task_name = ANY (p_names) AND l.max_concurrency_per_key IS NOT NULL)
       OR EXISTS (SELECT 1 FROM {schema}.rate_limits r
                  WHERE r.kind <> 'all'
                    AND ((r.scope = 'task' AND r.name = ANY (p_names))
                         OR (r.scope = 'queue' AND r.name = p_queue))) THEN
        v_scan := least(greatest(p_want * 8, 200), 2000);
    ELSE
        v_scan := least(p_want * least(cardinality(p_names), 8), 2000);
    END IF;

    -- A rated name's rows are sent flagged (is_rated; rate_sweep flags those that
    -- escaped), so they are read from the index of limited work: reading the rest for
    -- them would cost a claim the depth of the unrated backlog. A queue with a rate of
    -- its own rates all its rows: both indexes.
    v_queue_rated := EXISTS (SELECT 1 FROM {schema}.rate_limits r
                             WHERE r.scope = 'queue' AND r.name = p_queue);

    -- The head of the queue, in claim order, unlocked.
    SELECT array_agg(m.id), array_agg(m.task_name), array_agg(m.partition_key),
           array_agg(m.cost), array_agg(m.pays)
    INTO c_id, c_name, c_key, c_cost, c_pays
    FROM ((SELECT p.id, p.task_name, p.partition_key, p.cost,
                  p.paid_errors IS DISTINCT FROM p.errors AS pays, p.priority, p.vtime
           FROM {schema}.tasks p
           WHERE p.state = 'queued' AND NOT p.limited AND p.queue = p_queue AND v_queue_rated
             AND p.task_name = ANY (p_names)
           ORDER BY p.priority DESC, p.vtime, p.id LIMIT v_scan)
          UNION ALL
          (SELECT p.id, p.task_name, p.partition_key, p.cost,
                  p.paid_errors IS DISTINCT FROM p.errors AS pays, p.priority, p.vtime
           FROM {schema}.tasks p
           WHERE p.state = 'queued' AND p.limited AND p.queue = p_queue
             AND p.task_name = ANY (p_names)
           ORDER BY p.priority DESC, p.vtime, p.id LIMIT v_scan)
          ORDER BY priority DESC, vtime, id LIMIT v_scan) m;
    IF c_id IS NULL THEN
        RETURN;
    END IF;

    -- The rate buckets these tasks belong to, in lock order, with the limit of each: a
    -- key's own rate wins over the default of each key.
    WITH f AS MATERIALIZED (
        SELECT * FROM {schema}.rates_in_force() r
        WHERE (r.scope = 'task' AND r.name = ANY (p_names))
           OR (r.scope = 'queue' AND r.name = p_queue)
    ),
    c AS MATERIALIZED (SELECT DISTINCT u.name, u.key FROM unnest(c_name, c_key) AS u(name, key)),
    need AS (
        SELECT 'task' AS scope, f.name, false AS per_key, '' AS key, f.per_second, f.burst
        FROM f WHERE f.scope = 'task' AND f.kind = 'all' AND f.name IN (SELECT c.name FROM c)
        UNION ALL
        SELECT 'task', c.name, true, c.key, e.per_second, e.burst
        FROM c CROSS JOIN LATERAL (
            SELECT f.per_second, f.burst FROM f
            WHERE f.scope = 'task' AND f.name = c.name
              AND (f.kind = 'each' OR (f.kind = 'key' AND f.key = c.key))
            ORDER BY f.kind = 'key' DESC LIMIT 1) e
        UNION ALL
        SELECT 'queue', p_queue, false, '', f.per_second, f.burst
        FROM f WHERE f.scope = 'queue' AND f.kind = 'all'
        UNION ALL
        SELECT 'queue', p_queue, true, k.key, e.per_second, e.burst
        FROM (SELECT DISTINCT c.key FROM c) k CROSS JOIN LATERAL (
            SELECT f.per_second, f.burst FROM f
            WHERE f.scope = 'queue' AND (f.kind = 'each' OR (f.kind = 'key' AND f.key = k.key))
            ORDER BY f.kind = 'key' DESC LIMIT 1) e
    )
    SELECT array_agg(n.scope ORDER BY n.scope, n.name, n.per_key, n.key),
           array_agg(n.name ORDER BY n.scope, n.name, n.per_key, n.key),
           array_agg(n.per_key ORDER BY n.scope, n.name, n.per_key, n.key),
           array_agg(n.key ORDER BY n.scope, n.name, n.per_key, n.key),
           array_agg(n.per_second ORDER BY n.scope, n.name, n.per_key, n.key),
           array_agg(n.burst ORDER BY n.scope, n.name, n.per_key, n.key)
    INTO n_scope, n_name, n_per_key, n_key, n_rate, n_burst
    FROM need n;

    IF n_scope IS NOT NULL THEN
        -- Each task's rate buckets, by their place in the lists above (0: none).
        SELECT array_agg(coalesce(rt.ord, 0) ORDER BY c.ord),
               array_agg(coalesce(rtk.ord, 0) ORDER BY c.ord),
               array_agg(coalesce(rq.ord, 0) ORDER BY c.ord),
               array_agg(coalesce(rqk.ord, 0) ORDER BY c.ord)
        INTO c_rt, c_rtk, c_rq, c_rqk
        FROM unnest(c_name, c_key) WITH ORDINALITY AS c(name, key, ord)
        LEFT JOIN unnest(n_scope, n_name, n_per_key, n_key) WITH ORDINALITY
            AS rt(scope, name, per_key, key, ord)
            ON rt.scope = 'task' AND rt.name = c.name AND NOT rt.per_key
        LEFT JOIN unnest(n_scope, n_name, n_per_key, n_key) WITH ORDINALITY
            AS rtk(scope, name, per_key, key, ord)
            ON rtk.scope = 'task' AND rtk.name = c.name AND rtk.per_key AND rtk.key = c.key
        LEFT JOIN unnest(n_scope, n_name, n_per_key, n_key) WITH ORDINALITY
            AS rq(scope, name, per_key, key, ord)
            ON rq.scope = 'queue' AND NOT rq.per_key
        LEFT JOIN unnest(n_scope, n_name, n_per_key, n_key) WITH ORDINALITY
            AS rqk(scope, name, per_key, key, ord)
            ON rqk.scope = 'queue' AND rqk.per_key AND rqk.key = c.key;

        -- A bucket not yet written is full. Only the first rated queue of a transaction
        -- writes one: a later one could wait on another claim's new bucket while holding
        -- a bucket that claim waits for.
        INSERT INTO {schema}.rate_buckets (scope, name, per_key, key, tokens, at)
        SELECT u.scope, u.name, u.per_key, u.key, u.burst, v_now
        FROM unnest(n_scope, n_name, n_per_key, n_key, n_burst) WITH ORDINALITY
            AS u(scope, name, per_key, key, burst, ord)
        WHERE v_first AND NOT EXISTS (SELECT 1 FROM {schema}.rate_buckets b
                          WHERE b.scope = u.scope AND b.name = u.name
                            AND b.per_key = u.per_key AND b.key = u.key)
        ORDER BY u.ord
        ON CONFLICT DO NOTHING;

        -- A bucket another claim holds has nothing to spend in this one.
        b_tok := array_fill(0.0::double precision, ARRAY[array_length(n_scope, 1)]);
        b_spent := b_tok;
        b_blocked := array_fill(false, ARRAY[array_length(n_scope, 1)]);
        b_mine := b_blocked;
        b_rate := n_rate;
        b_burst := n_burst;
        PERFORM set_config('tenure.rate_locked', 'yes', true);
        IF v_first THEN
            SELECT array_agg(x.ord) INTO v_locked
            FROM (SELECT u.ord FROM unnest(n_scope, n_name, n_per_key, n_key) WITH ORDINALITY
                                    AS u(scope, name, per_key, key, ord)
                  JOIN {schema}.rate_buckets b
                    ON b.scope = u.scope AND b.name = u.name AND b.per_key = u.per_key
                   AND b.key = u.key
                  ORDER BY u.ord FOR UPDATE OF b) x;
        ELSE
            SELECT array_agg(x.ord) INTO v_locked
            FROM (SELECT u.ord FROM unnest(n_scope, n_name, n_per_key, n_key) WITH ORDINALITY
                                    AS u(scope, name, per_key, key, ord)
                  JOIN {schema}.rate_buckets b
                    ON b.scope = u.scope AND b.name = u.name AND b.per_key = u.per_key
                   AND b.key = u.key
                  ORDER BY u.ord FOR UPDATE OF b SKIP LOCKED) x;
        END IF;
        -- Refilled to now, read after the locks: a claim that waited for another's
        -- bucket counts from that claim's write, never from before it.
        v_now := clock_timestamp();
        FOR b_locked IN
            SELECT u.ord, b.tokens, b.at,
                   {schema}.rate_factor(b.slow_factor, b.slow_until, v_now) AS factor
            FROM unnest(n_scope, n_name, n_per_key, n_key) WITH ORDINALITY
                AS u(scope, name, per_key, key, ord)
            JOIN {schema}.rate_buckets b
              ON b.scope = u.scope AND b.name = u.name AND b.per_key = u.per_key AND b.key = u.key
            WHERE u.ord = ANY (v_locked)
        LOOP
            b_mine[b_locked.ord] := true;
            b_rate[b_locked.ord] := n_rate[b_locked.ord] * b_locked.factor;
            b_burst[b_locked.ord] := greatest(1.0, n_burst[b_locked.ord] * b_locked.factor);
            b_tok[b_locked.ord] := {schema}.rate_tokens(b_locked.tokens, b_locked.at, v_now,
                n_rate[b_locked.ord], n_burst[b_locked.ord], b_locked.factor);
        END LOOP;
    END IF;

    -- Each task in turn: taken if every bucket it belongs to can pay for it.
    FOR v_i IN 1 .. array_length(c_id, 1) LOOP
        EXIT WHEN v_taken >= p_want;
        v_ok := true;
        v_need := CASE WHEN c_pays[v_i] THEN c_cost[v_i] ELSE 0 END;
        IF v_need > 0 AND n_scope IS NOT NULL THEN
            FOREACH v_b IN ARRAY ARRAY[c_rtk[v_i], c_rqk[v_i], c_rt[v_i], c_rq[v_i]] LOOP
                IF v_b > 0 AND NOT b_mine[v_b] THEN
                    v_ok := false;  -- another claim holds it: it will be free again soon
                    v_wait := least(coalesce(v_wait, 'infinity'), 0.01);
                ELSIF v_b > 0 AND b_blocked[v_b] THEN
                    v_ok := false;
                ELSIF v_b > 0 AND b_tok[v_b] < least(v_need, b_burst[v_b]) THEN
                    v_ok := false;
                    b_blocked[v_b] := true;
                    v_wait := least(coalesce(v_wait, 'infinity'),
                                    (least(v_need, b_burst[v_b]) - b_tok[v_b]) / b_rate[v_b]);
                END IF;
            END LOOP;
        END IF;
        v_conc := v_q.max_concurrency IS NOT NULL OR v_q.max_concurrency_per_key IS NOT NULL
                  OR c_name[v_i] = ANY (v_conc_names);
        IF v_ok AND v_conc THEN
            v_cap_names := ARRAY[]::text[];
            IF v_q.max_concurrency IS NOT NULL THEN
                v_cap_names := v_cap_names || {schema}.bucket_name('q', p_queue, NULL, NULL);
            END IF;
            IF v_q.max_concurrency_per_key IS NOT NULL THEN
                v_caps := {schema}.bucket_visit(v_caps, 'qk', p_queue, NULL, c_key[v_i],
                                                v_q.max_concurrency_per_key);
                v_cap_names := v_cap_names || {schema}.bucket_name('qk', p_queue, NULL, c_key[v_i]);
            END IF;
            IF c_name[v_i] = ANY (v_conc_names) THEN
                SELECT l.max_concurrency, l.max_concurrency_per_key INTO v_lim
                FROM {schema}.limits l WHERE l.task_name = c_name[v_i];
                IF v_lim.max_concurrency IS NOT NULL THEN
                    v_caps := {schema}.bucket_visit(v_caps, 't', NULL, c_name[v_i], NULL,
                                                    v_lim.max_concurrency);
                    v_cap_names := v_cap_names || {schema}.bucket_name('t', NULL, c_name[v_i], NULL);
                END IF;
                IF v_lim.max_concurrency_per_key IS NOT NULL THEN
                    v_caps := {schema}.bucket_visit(v_caps, 'tk', NULL, c_name[v_i], c_key[v_i],
                                                    v_lim.max_concurrency_per_key);
                    v_cap_names := v_cap_names
                                   || {schema}.bucket_name('tk', NULL, c_name[v_i], c_key[v_i]);
                END IF;
            END IF;
            FOREACH v_cap IN ARRAY v_cap_names LOOP
                IF (v_caps ->> v_cap)::integer <= 0 THEN
                    v_ok := false;
                END IF;
            END LOOP;
            IF v_ok THEN
                FOREACH v_cap IN ARRAY v_cap_names LOOP
                    v_caps := jsonb_set(v_caps, ARRAY[v_cap],
                                        to_jsonb((v_caps ->> v_cap)::integer - 1));
                END LOOP;
            END IF;
        END IF;
        IF v_ok THEN
            IF v_need > 0 AND n_scope IS NOT NULL THEN
                FOREACH v_b IN ARRAY ARRAY[c_rtk[v_i], c_rqk[v_i], c_rt[v_i], c_rq[v_i]] LOOP
                    IF v_b > 0 THEN
                        b_tok[v_b] := b_tok[v_b] - least(v_need, b_burst[v_b]);
                        b_spent[v_b] := b_spent[v_b] + least(v_need, b_burst[v_b]);
                    END IF;
                END LOOP;
                v_paying := v_paying || c_id[v_i];
            END IF;
            v_chosen := v_chosen || c_id[v_i];
            v_taken := v_taken + 1;
        END IF;
    END LOOP;

    IF v_wait IS NOT NULL THEN
        PERFORM set_config('tenure.rate_wait', least(
            coalesce(nullif(current_setting('tenure.rate_wait', true), '')::double precision,
                     'infinity'), v_wait)::text, true);
    END IF;

    -- Claim the chosen rows as claim() does; one another claimer took meanwhile, or
    -- whose units were paid since it was read, is left, and what it paid goes back.
    IF v_taken > 0 THEN
        RETURN QUERY
        WITH claimed AS (
            UPDATE {schema}.tasks t
            SET state = 'running', attempt = t.attempt + 1, lease_owner = p_worker,
                lease_expires_at = clock_timestamp() + greatest(t.lease, p_lease),
                started_at = clock_timestamp(), paid_errors = t.errors,
                limited = t.limited OR v_q.max_concurrency IS NOT NULL
                          OR v_q.max_concurrency_per_key IS NOT NULL
                          OR t.task_name = ANY (v_conc_names)
            WHERE t.id = ANY (ARRAY(
                SELECT s.id FROM {schema}.tasks s
                WHERE s.id = ANY (v_chosen) AND s.state = 'queued'
                  AND (s.id = ANY (v_paying)) = (s.paid_errors IS DISTINCT FROM s.errors)
                ORDER BY s.id  -- with sorting off: through the primary key, whatever
                FOR UPDATE SKIP LOCKED))                -- the statistics say
            RETURNING t.*
        )
        SELECT * FROM claimed c ORDER BY c.priority DESC, c.vtime, c.id;
        GET DIAGNOSTICS v_got = ROW_COUNT;
        IF v_got < v_taken AND n_scope IS NOT NULL THEN
            FOR v_missed IN
                SELECT x.id FROM unnest(v_paying) AS x(id)
                WHERE NOT EXISTS (SELECT 1 FROM {schema}.tasks t
                                  WHERE t.id = x.id AND t.state = 'running'
                                    AND t.lease_owner = p_worker AND t.started_at >= v_now)
            LOOP
                v_i := array_position(c_id, v_missed);
                FOREACH v_b IN ARRAY ARRAY[c_rtk[v_i], c_rqk[v_i], c_rt[v_i], c_rq[v_i]] LOOP
                    IF v_b > 0 THEN
                        b_tok[v_b] := b_tok[v_b] + least(c_cost[v_i], b_burst[v_b]);
                        b_spent[v_b] := b_spent[v_b] - least(c_cost[v_i], b_burst[v_b]);
                    END IF;
                END LOOP;
            END LOOP;
        END IF;
    END IF;

    -- Write each bucket that was spent from or held work back, once.
    FOR v_b IN 1 .. coalesce(array_length(n_scope, 1), 0) LOOP
        CONTINUE WHEN NOT b_mine[v_b] OR (b_spent[v_b] <= 0 AND NOT b_blocked[v_b]);
        UPDATE {schema}.rate_buckets b
        SET tokens = CASE WHEN b_spent[v_b] > 0 THEN b_tok[v_b] ELSE b.tokens END,
            at = CASE WHEN b_spent[v_b] > 0 THEN greatest(b.at, v_now) ELSE b.at END,
            slow_factor = CASE WHEN b_spent[v_b] > 0
                               THEN {schema}.rate_factor(b.slow_factor, b.slow_until, v_now)
                               ELSE b.slow_factor END,
            recent = CASE WHEN b_spent[v_b] > 0
                          THEN b.recent * exp(-greatest(0.0, extract(epoch FROM v_now - b.at)
                                                               ::double precision) / 10.0)
                               + b_spent[v_b] / 10.0
                          ELSE b.recent END,
            spent = b.spent + greatest(b_spent[v_b], 0.0),
            held_at = CASE WHEN b_blocked[v_b] THEN v_now ELSE b.held_at END,
            held_queue = CASE WHEN b_blocked[v_b] THEN p_queue ELSE b.held_queue END
        WHERE b.scope = n_scope[v_b] AND b.name = n_name[v_b] AND b.per_key = n_per_key[v_b]
          AND b.key = n_key[v_b]
          AND (b_spent[v_b] > 0 OR b.held_at IS NULL OR b.held_at < v_now - interval '1 second'
               OR b.held_queue IS DISTINCT FROM p_queue);
    END LOOP;
END;
$$;

-- Rows of a rated name that escaped the flag (sent, or retried, by a release before
-- 0.3.0, or sent before the rate was set) are flagged once they near the head of their
-- queue: once a second per session and queue, the first p_depth rows of the unflagged
-- index are looked at.
CREATE OR REPLACE FUNCTION {schema}.rate_sweep(p_queue text, p_names text[], p_depth integer)
RETURNS void
LANGUAGE plpgsql
SET enable_sort = off
SET jit = off
AS $$
DECLARE
    v_at     double precision := extract(epoch FROM clock_timestamp());
    v_swept  text := 'tenure.rate_swept_' || abs(hashtext(p_queue));
BEGIN
    IF v_at - coalesce(nullif(current_setting(v_swept, true), '')::double precision, 0) <= 1 THEN
        RETURN;
    END IF;
    PERFORM set_config(v_swept, v_at::text, false);
    UPDATE {schema}.tasks t SET limited = true
    WHERE t.id = ANY (ARRAY(
        SELECT h.id FROM (SELECT p.id, p.task_name FROM {schema}.tasks p
                          WHERE p.state = 'queued' AND NOT p.limited AND p.queue = p_queue
                          ORDER BY p.priority DESC, p.vtime, p.id LIMIT p_depth) h
        WHERE h.task_name = ANY (p_names)))
      AND t.state = 'queued' AND NOT t.limited;
END;
$$;

-- Claim as claim() does, with the work under rate limits first: each of p_queues in
-- turn from p_start gives its rated tasks (all of a queue with a rate, those of rated
-- names in the others: flagged, so a queue with none costs one probe) up to what is
-- left, then claim() claims the rest from the queues and names no rate applies to.
-- p_rated_names and p_rated_queues are the names and queues among these with a rate
-- (complete_then_claim looks them up; with none it calls claim() alone).
-- tenure.rate_wait is left set (or empty) for the caller.
CREATE OR REPLACE FUNCTION {schema}.claim_next(p_worker uuid, p_queues text[], p_names text[],
                                               p_limit integer, p_lease interval,
                                               p_start integer, p_rated_names text[],
                                               p_rated_queues text[])
RETURNS SETOF {schema}.tasks
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
    v_nq     integer := coalesce(array_length(p_queues, 1), 0);
    v_left   integer := p_limit;
    v_got    integer;
    v_queue  text;
    v_names  text[];
    v_rated  boolean;
BEGIN
    FOR i IN 0 .. v_nq - 1 LOOP
        EXIT WHEN v_left <= 0;
        v_queue := p_queues[1 + mod(p_start + i, v_nq)];
        CONTINUE WHEN EXISTS (SELECT 1 FROM {schema}.queues q WHERE q.name = v_queue AND q.paused);
        v_rated := v_queue = ANY (p_rated_queues);
        v_names := CASE WHEN v_rated THEN p_names ELSE p_rated_names END;
        CONTINUE WHEN cardinality(v_names) = 0;
        IF NOT v_rated THEN
            PERFORM {schema}.rate_sweep(v_queue, v_names, least(greatest(v_left * 8, 200), 2000));
            CONTINUE WHEN NOT EXISTS (SELECT 1 FROM {schema}.tasks t
                                      WHERE t.state = 'queued' AND t.limited
                                        AND t.queue = v_queue);
        END IF;
        RETURN QUERY SELECT * FROM {schema}.claim_rated(p_worker, v_queue, v_names, v_left, p_lease);
        GET DIAGNOSTICS v_got = ROW_COUNT;
        v_left := v_left - v_got;
    END LOOP;
    IF v_left > 0 THEN
        RETURN QUERY SELECT * FROM {schema}.claim(
            p_worker,
            CASE WHEN cardinality(p_rated_queues) = 0 THEN p_queues
                 ELSE ARRAY(SELECT q FROM unnest(p_queues) AS q
                            WHERE NOT (q = ANY (p_rated_queues))) END,
            ARRAY(SELECT n FROM unnest(p_names) AS n WHERE NOT (n = ANY (p_rated_names))),
            v_left, p_lease, p_start);
    END IF;
END;
$$;

-- What a task told to slow down asks of the rate limits it is under (tenure.RetryAfter
-- with slow_down): each bucket of its key (or, under no per-key rate, of its name and
-- queue) refills at p_factor of what it did, down to a hundredth of its rate, until
-- p_seconds from now (a later request extends it), and what it holds is spent.
-- Returns how many buckets were slowed.
CREATE OR REPLACE FUNCTION {schema}.rate_slow_down(p_ids bigint[], p_factors double precision[],
                                                   p_seconds double precision[])
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_slowed integer;
BEGIN
    WITH asked AS (
        SELECT t.task_name, t.queue, t.partition_key, min(u.factor) AS factor,
               max(u.seconds) AS seconds
        FROM unnest(p_ids, p_factors, p_seconds) AS u(id, factor, seconds)
        JOIN {schema}.tasks t ON t.id = u.id
        GROUP BY t.task_name, t.queue, t.partition_key
    ),
    target AS (
        SELECT DISTINCT ON (b.scope, b.name, b.per_key, b.key)
               b.scope, b.name, b.per_key, b.key, a.factor, a.seconds
        FROM asked a
        JOIN {schema}.rate_buckets b
          ON ((b.scope = 'task' AND b.name = a.task_name) OR (b.scope = 'queue' AND b.name = a.queue))
         AND (b.key = a.partition_key AND b.per_key
              OR NOT b.per_key AND NOT EXISTS (
                  SELECT 1 FROM {schema}.rate_buckets k
                  WHERE k.per_key AND k.key = a.partition_key
                    AND ((k.scope = 'task' AND k.name = a.task_name)
                         OR (k.scope = 'queue' AND k.name = a.queue))))
        ORDER BY b.scope, b.name, b.per_key, b.key, a.factor
    ),
    slowed AS (
        UPDATE {schema}.rate_buckets b
        SET slow_factor = greatest(0.01, {schema}.rate_factor(b.slow_factor, b.slow_until, now())
                                         * least(1.0, greatest(0.0, g.factor))),
            slow_until = greatest(coalesce(b.slow_until, now()),
                                  now() + make_interval(secs => g.seconds)),
            tokens = least(b.tokens, 0.0), at = greatest(b.at, clock_timestamp())
        FROM target g
        WHERE b.scope = g.scope AND b.name = g.name AND b.per_key = g.per_key AND b.key = g.key
        RETURNING 1
    )
    SELECT count(*) INTO v_slowed FROM slowed;
    RETURN v_slowed;
END;
$$;
