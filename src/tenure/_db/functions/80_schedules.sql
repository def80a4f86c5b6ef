-- Schedules: each tick sent once, by whichever worker looks first.

-- Fire the due ticks of one schedule. p_expected and p_version are the next_tick and
-- updated_at the caller read and planned from: when another worker holds the row
-- (firing it now), fired it first, or the schedule changed since, nothing happens and
-- no row comes back. Otherwise each
-- tick of p_ticks (oldest first) is recorded in schedule_ticks, whose primary key
-- refuses a tick recorded before, and sends a task carrying the schedule's name and
-- the tick, unless the schedule does not overlap and its last task is still waiting
-- or running (then the tick is recorded as skipped_running). A run an operator asked
-- for (trigger_requested_at) is sent too, as its own tick. The schedule then moves on
-- to p_next, due at p_fire_at, with p_missed more ticks counted missed. All of it is
-- one transaction: a worker that dies in it sends nothing and moves nothing on.
CREATE OR REPLACE FUNCTION {schema}.schedule_fire(
    p_name text, p_expected timestamptz, p_version timestamptz, p_ticks timestamptz[],
    p_missed bigint,
    p_next timestamptz, p_fire_at timestamptz, p_max_attempts integer,
    p_max_crashes integer, p_priority integer, p_lease interval, p_limited boolean)
RETURNS TABLE (tick timestamptz, task_id bigint, outcome text)
LANGUAGE plpgsql AS $$
DECLARE
    v_s      {schema}.schedules;
    v_tick   timestamptz;
    v_kind   text;
    v_id     bigint;
    v_ticks  timestamptz[] := p_ticks;
    v_last   timestamptz;
    v_fired  timestamptz;
BEGIN
    SELECT * INTO v_s FROM {schema}.schedules s WHERE s.name = p_name
    FOR UPDATE SKIP LOCKED;
    IF NOT FOUND OR v_s.next_tick IS DISTINCT FROM p_expected
       OR v_s.updated_at IS DISTINCT FROM p_version THEN
        RETURN;
    END IF;
    IF v_s.paused THEN
        v_ticks := '{{}}';  -- only a run asked for is sent; the schedule stays where it is
    END IF;
    IF v_s.trigger_requested_at IS NOT NULL THEN
        v_ticks := v_ticks || v_s.trigger_requested_at;
    END IF;
    FOREACH v_tick IN ARRAY v_ticks LOOP
        v_kind := CASE WHEN v_tick = v_s.trigger_requested_at THEN 'triggered' ELSE 'sent' END;
        IF v_kind = 'sent' AND NOT v_s.overlap AND v_s.last_task_id IS NOT NULL
           AND EXISTS (SELECT 1 FROM {schema}.tasks t WHERE t.id = v_s.last_task_id) THEN
            v_kind := 'skipped_running';
        END IF;
        INSERT INTO {schema}.schedule_ticks AS st (schedule, tick, outcome)
        VALUES (p_name, v_tick, v_kind)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            CONTINUE;  -- recorded before: sent (or skipped) already
        END IF;
        v_id := NULL;
        IF v_kind <> 'skipped_running' THEN
            INSERT INTO {schema}.tasks (task_name, queue, payload, priority, max_attempts,
                                        max_crashes, limited, lease, state, vtime,
                                        schedule, schedule_tick)
            VALUES (v_s.task_name, v_s.queue, v_s.payload, p_priority, p_max_attempts,
                    p_max_crashes, {schema}.is_limited(v_s.task_name, v_s.queue, p_limited),
                    p_lease, 'queued', {schema}.vtime_base(v_s.queue, ''), p_name, v_tick)
            RETURNING id INTO v_id;
            UPDATE {schema}.schedule_ticks st SET task_id = v_id
            WHERE st.schedule = p_name AND st.tick = v_tick;
            v_s.last_task_id := v_id;
            v_fired := now();
        END IF;
        IF v_kind <> 'triggered' THEN
            v_last := v_tick;
        END IF;
        tick := v_tick;
        task_id := v_id;
        outcome := v_kind;
        RETURN NEXT;
    END LOOP;
    UPDATE {schema}.schedules s
    SET next_tick = CASE WHEN s.paused THEN s.next_tick ELSE p_next END,
        fire_at = CASE WHEN s.paused THEN s.fire_at ELSE p_fire_at END,
        last_tick = coalesce(v_last, s.last_tick),
        last_task_id = v_s.last_task_id,
        last_fired_at = coalesce(v_fired, s.last_fired_at),
        missed = s.missed + CASE WHEN s.paused THEN 0 ELSE p_missed END,
        trigger_requested_at = NULL
    WHERE s.name = p_name;
    IF v_fired IS NOT NULL THEN
        PERFORM pg_notify({channel}, v_s.queue);
    END IF;
END;
$$;

-- retry_task, and a task a schedule sent gets its schedule and tick back (a finished
-- task keeps them only in schedule_ticks), so a retried backfill knows its period.
CREATE OR REPLACE FUNCTION {schema}.requeue_task(p_id bigint)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_answer text;
BEGIN
    v_answer := {schema}.retry_task(p_id);
    IF v_answer = 'queued' THEN
        UPDATE {schema}.tasks t SET schedule = st.schedule, schedule_tick = st.tick
        FROM {schema}.schedule_ticks st
        WHERE st.task_id = p_id AND t.id = p_id;
    END IF;
    RETURN v_answer;
END;
$$;
