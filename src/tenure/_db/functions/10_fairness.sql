-- Fairness: where a task enters its queue (virtual time per partition key), and the
-- promotion of due scheduled tasks to their fair place.

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
