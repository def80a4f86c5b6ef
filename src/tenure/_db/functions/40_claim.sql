-- Claiming: fair, weighted claims across queues, and the claim path under limits.

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
    v_queue_cap  text := {schema}.bucket_name('q', p_queue, NULL, NULL);
BEGIN
    SELECT * INTO v_q FROM {schema}.queues q WHERE q.name = p_queue;
    IF v_q.max_concurrency IS NOT NULL THEN
        v_caps := {schema}.bucket_visit(v_caps, 'q', p_queue, NULL, NULL, v_q.max_concurrency);
        IF (v_caps ->> v_queue_cap)::integer <= 0 THEN
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
                v_names := v_names || v_queue_cap;
            END IF;
            IF v_q.max_concurrency_per_key IS NOT NULL THEN
                v_key_cap := {schema}.bucket_name('qk', p_queue, NULL, v_cand.partition_key);
                v_caps := {schema}.bucket_visit(v_caps, 'qk', p_queue, NULL, v_cand.partition_key,
                                                v_q.max_concurrency_per_key);
                v_names := v_names || v_key_cap;
            END IF;
            IF v_cand.limited THEN
                SELECT l.max_concurrency, l.max_concurrency_per_key INTO v_lim
                FROM {schema}.limits l WHERE l.task_name = v_cand.task_name;
                IF v_lim.max_concurrency IS NOT NULL THEN
                    v_name_cap := {schema}.bucket_name('t', NULL, v_cand.task_name, NULL);
                    v_caps := {schema}.bucket_visit(v_caps, 't', NULL, v_cand.task_name, NULL,
                                                    v_lim.max_concurrency);
                    v_names := v_names || v_name_cap;
                END IF;
                IF v_lim.max_concurrency_per_key IS NOT NULL THEN
                    v_caps := {schema}.bucket_visit(v_caps, 'tk', NULL, v_cand.task_name,
                                                    v_cand.partition_key,
                                                    v_lim.max_concurrency_per_key);
                    v_names := v_names || {schema}.bucket_name('tk', NULL, v_cand.task_name,
                                                               v_cand.partition_key);
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
                      AND (v_caps ->> v_queue_cap)::integer <= 0;
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
                        AND {schema}.has_limit(l.max_concurrency, l.max_concurrency_per_key));

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
            IF NOT {schema}.has_limit(v_q.max_concurrency, v_q.max_concurrency_per_key) THEN
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
