-- tenure 0010: rate limits, N starts per period, fleet-wide, on a task name or a queue,
-- as a whole and per partition key (tenure/rates.py).
--
-- rate_limits holds what is declared: a task name's or a queue's rate as a whole
-- (kind 'all'), the default rate of each of its partition keys ('each') and one key's
-- own rate ('key', overriding 'each'). Workers publish the rates their code declares
-- (source 'code'); an operator's row for the same limit (source 'operator') wins
-- until it is cleared. rate_buckets holds each limit's token bucket: `tokens` as of
-- `at`, refilled at the rate up to the burst, and spent by the claim that starts
-- the work, in the same statement, under the bucket row's lock. A bucket a task told
-- to slow down (a 429 from the API it calls) refills at `slow_factor` of its rate
-- until `slow_until`. `recent` is the units spent per second, decayed over about
-- 10 s, for the dashboard and status; `spent` counts every unit; `held_at` and
-- `held_queue` say when and where it last held work back (written at most once a
-- second), so a queue waiting on a rate says so instead of looking stuck.
--
-- A task's `cost` is the units each start spends (1 by default); `paid_errors` is the
-- task's error count when its units were last spent, so that a start after a
-- takeover or a handed-back prefetch spends nothing again. Releases before 0.3.0
-- neither read nor write these: their claims ignore rate limits, and the columns'
-- defaults keep their sends valid.
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

ALTER TABLE {schema}.tasks
    ADD COLUMN cost integer NOT NULL DEFAULT 1 CHECK (cost >= 1),
    ADD COLUMN paid_errors integer;

-- complete_then_claim (0.3.0 before its release) now also reports a rate limit's wait:
-- its result changes, so it is made again by the functions.
DROP FUNCTION IF EXISTS {schema}.complete_then_claim(uuid, bigint[], integer[], text[], jsonb[],
                                                     text[], double precision[], text[], text[],
                                                     integer, interval, integer);
