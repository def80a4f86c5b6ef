-- tenure 0009: schedules, periodic tasks that every worker may fire and the
-- database sends once per tick (tenure/schedules.py, tenure/_worker/scheduler.py).
--
-- A schedule is a cron expression or a fixed interval, with the payload it sends and
-- its catch-up policy. `next_tick` is the next tick to fire and `fire_at` when it is
-- due (the tick plus its jitter); a worker that fires a tick moves both on in the same
-- transaction that sends the task and records the tick, under the row's lock and only
-- if `next_tick` is still what it read, so two workers never send one tick twice.
-- schedule_ticks keeps what each tick did (its primary key refuses a tick sent
-- twice even after a schedule changed), and which task each sent. A task a schedule
-- sent carries the schedule's name and its tick while it waits or runs, which
-- `tenure.current()` gives the task; finished, its tick is found in schedule_ticks
-- (requeue_task puts it back on a retry). The added columns are nullable: releases
-- before 0.3.0 neither read nor write them.
CREATE TABLE {schema}.schedules (
    name          text PRIMARY KEY,
    task_name     text NOT NULL,
    queue         text NOT NULL,
    cron          text,
    every         interval CHECK (every >= interval '1 second'),
    timezone      text NOT NULL DEFAULT 'UTC',
    payload       jsonb NOT NULL,
    catch_up      text NOT NULL DEFAULT 'latest' CHECK (catch_up IN ('latest', 'all')),
    max_catch_up  integer NOT NULL DEFAULT 100 CHECK (max_catch_up > 0),
    jitter        interval NOT NULL DEFAULT '0' CHECK (jitter >= interval '0'),
    overlap       boolean NOT NULL DEFAULT true,
    source        text NOT NULL CHECK (source IN ('code', 'operator')),
    paused        boolean NOT NULL DEFAULT false,
    next_tick     timestamptz,               -- NULL: a worker computes it at its next look
    fire_at       timestamptz NOT NULL DEFAULT now(), -- when next_tick is due (plus jitter)
    trigger_requested_at timestamptz,        -- an operator asked for a run now
    last_tick     timestamptz,
    last_task_id  bigint,
    last_fired_at timestamptz,
    missed        bigint NOT NULL DEFAULT 0, -- ticks the catch-up policy did not send
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL) <> (every IS NULL))
);

CREATE INDEX schedules_due_idx ON {schema}.schedules (queue, fire_at);

CREATE TABLE {schema}.schedule_ticks (
    schedule text NOT NULL,
    tick     timestamptz NOT NULL,
    task_id  bigint,                         -- NULL: not sent (the last tick's task ran on)
    outcome  text NOT NULL CHECK (outcome IN ('sent', 'skipped_running', 'triggered')),
    fired_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, tick)
);

CREATE INDEX schedule_ticks_fired_at_idx ON {schema}.schedule_ticks (fired_at);
CREATE INDEX schedule_ticks_task_idx ON {schema}.schedule_ticks (task_id)
    WHERE task_id IS NOT NULL;

ALTER TABLE {schema}.tasks
    ADD COLUMN schedule text,
    ADD COLUMN schedule_tick timestamptz;
