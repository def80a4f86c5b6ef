-- tenure schema: the truth for tables, indexes and constraints (functions/ holds
-- the functions). The numbered migrations must produce exactly this
-- (tests/test_schema.py proves it). {schema} is filled in as in the migrations.

CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE {schema}.migrations (
    name       text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Which releases migrated the schema, the oldest release each still serves, and the
-- digest of the functions as each left them (tenure/_db/releases.py).
CREATE TABLE {schema}.releases (
    release     text PRIMARY KEY,
    serves_from text NOT NULL,
    functions   text NOT NULL,
    migrated_at timestamptz NOT NULL DEFAULT now()
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
    partition_key    text NOT NULL DEFAULT '',
    state            text NOT NULL DEFAULT 'queued',
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
    vtime            double precision NOT NULL DEFAULT 0, -- fair place among its key's work
    cancel_requested boolean NOT NULL DEFAULT false,  -- an operator asked it to stop
    schedule         text,                          -- the schedule that sent it
    schedule_tick    timestamptz,                   -- and the tick it was sent for
    cost             integer NOT NULL DEFAULT 1 CHECK (cost >= 1), -- rate units per start
    paid_errors      integer,                       -- errors when its units were spent
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CONSTRAINT tasks_state_check CHECK (state IN ('scheduled', 'queued', 'running'))
);

CREATE INDEX tasks_claim_idx ON {schema}.tasks (queue, priority DESC, vtime, id)
    WHERE state = 'queued' AND NOT limited;
CREATE INDEX tasks_claim_limited_idx ON {schema}.tasks (queue, priority DESC, vtime, id)
    WHERE state = 'queued' AND limited;
CREATE INDEX tasks_key_tail_idx ON {schema}.tasks (queue, partition_key, vtime)
    WHERE state = 'queued';
CREATE INDEX tasks_scheduled_idx ON {schema}.tasks (run_after) WHERE state = 'scheduled';
CREATE INDEX tasks_running_owner_idx ON {schema}.tasks (lease_owner) WHERE state = 'running';
CREATE INDEX tasks_running_expiry_idx ON {schema}.tasks (lease_expires_at) WHERE state = 'running';
-- Bucket counts of running work under a limit; unlimited claims never write these.
CREATE INDEX tasks_running_limited_queue_idx ON {schema}.tasks (queue, partition_key)
    WHERE state = 'running' AND limited;
CREATE INDEX tasks_running_limited_name_idx ON {schema}.tasks (task_name, partition_key)
    WHERE state = 'running' AND limited;

-- The common (name, queue, state) combinations, for estimates over a deep backlog.
CREATE STATISTICS {schema}.tasks_queue_name_state (mcv)
    ON task_name, queue, state FROM {schema}.tasks;

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
    idempotency_key text,
    max_attempts    integer,                  -- kept so an operator can retry it
    max_crashes     integer,
    lease           interval,
    limited         boolean NOT NULL DEFAULT false
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
    state        text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'draining', 'gone')),
    held         integer NOT NULL DEFAULT 0,   -- leases held (running or prefetched)
    running      integer NOT NULL DEFAULT 0,   -- attempts running now
    drain_requested boolean NOT NULL DEFAULT false,
    outcomes_pending integer NOT NULL DEFAULT 0,  -- finished here, not yet written
    outcomes_stalled_since timestamptz            -- set while they wait past a lease
);

CREATE INDEX workers_live_idx ON {schema}.workers (heartbeat_at) WHERE state <> 'gone';

-- Fleet-wide concurrency limits by task name, written by workers from their registry.
-- NULL means the limit was lifted: rows sent while it held are claimed freely.
CREATE TABLE {schema}.limits (
    task_name       text PRIMARY KEY,
    max_concurrency integer CHECK (max_concurrency > 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    max_concurrency_per_key integer CHECK (max_concurrency_per_key > 0)
);

CREATE TABLE {schema}.idempotency_keys (
    task_name  text NOT NULL,
    key        text NOT NULL,
    task_id    bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_name, key)
);

-- Queue settings, published by workers from their registry (reg.queue(...)).
CREATE TABLE {schema}.queues (
    name                    text PRIMARY KEY,
    weight                  integer NOT NULL DEFAULT 1 CHECK (weight > 0),
    max_concurrency         integer CHECK (max_concurrency > 0),
    max_concurrency_per_key integer CHECK (max_concurrency_per_key > 0),
    key_weights             jsonb NOT NULL DEFAULT '{{}}',
    paused                  boolean NOT NULL DEFAULT false,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- Clients waiting in handle.result(); completions notify only for waited tasks.
CREATE TABLE {schema}.result_waiters (
    task_id  bigint NOT NULL,
    listener integer NOT NULL,   -- backend pid of the waiting client's connection
    since    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, listener)
);

-- Periodic tasks (tenure/schedules.py): what each sends and when it fires next, and
-- what each tick did (migration 0009 says how a tick is sent once).
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

-- Rate limits and their token buckets (migration 0010 says how they are spent).
CREATE TABLE {schema}.rate_limits (
    scope      text NOT NULL CHECK (scope IN ('task', 'queue')),
    name       text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('all', 'each', 'key')),
    key        text NOT NULL DEFAULT '',
    per_second double precision NOT NULL CHECK (per_second > 0 AND per_second < 'infinity'),
    burst      double precision NOT NULL CHECK (burst >= 1 AND burst < 'infinity'),
    source     text NOT NULL CHECK (source IN ('code', 'operator')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, name, kind, key, source),
    CHECK ((kind = 'key') OR (key = ''))
);

CREATE TABLE {schema}.rate_buckets (
    scope       text NOT NULL,
    name        text NOT NULL,
    per_key     boolean NOT NULL,
    key         text NOT NULL,               -- '' for a bucket of the whole scope
    tokens      double precision NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    slow_factor double precision NOT NULL DEFAULT 1
                CHECK (slow_factor > 0 AND slow_factor <= 1),
    slow_until  timestamptz,
    recent      double precision NOT NULL DEFAULT 0,
    spent       double precision NOT NULL DEFAULT 0,
    held_at     timestamptz,                 -- the last claim it held work back in
    held_queue  text,                        -- and that claim's queue
    PRIMARY KEY (scope, name, per_key, key)
);

-- The hot table churns: vacuum and analyze it early and without cost delays.
ALTER TABLE {schema}.tasks SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
