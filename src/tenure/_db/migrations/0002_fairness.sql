-- tenure 0002: fairness and limits at every level.
--
-- * Fair across partition keys: every queued task carries a virtual time (vtime).
--   A task entering the queue gets max(the queue's head vtime, its key's last
--   queued vtime) + 1/weight, so keys are served round-robin (weighted) and a key
--   with a million queued tasks does not delay a key with ten. Priority still
--   orders first.
-- * Delayed work waits as 'scheduled' and gets its vtime when it becomes due, so
--   the claim index holds only claimable rows.
-- * Limits: per task name (max_concurrency, max_concurrency_per_key) and per queue
--   (max_concurrency, max_concurrency_per_key), all exact under races: each bucket
--   is counted under a transaction advisory lock after its stale leases expired.
-- * Workers publish how many tasks they hold and how many they run, so idle
--   capacity is visible to the fleet and prefetched work can be rebalanced.

ALTER TABLE {schema}.tasks DROP CONSTRAINT tasks_state_check;
ALTER TABLE {schema}.tasks ADD CONSTRAINT tasks_state_check
    CHECK (state IN ('scheduled', 'queued', 'running'));
ALTER TABLE {schema}.tasks ADD COLUMN vtime double precision NOT NULL DEFAULT 0;
UPDATE {schema}.tasks SET partition_key = '' WHERE partition_key IS NULL;
ALTER TABLE {schema}.tasks ALTER COLUMN partition_key SET DEFAULT '';
ALTER TABLE {schema}.tasks ALTER COLUMN partition_key SET NOT NULL;
UPDATE {schema}.tasks SET state = 'scheduled' WHERE state = 'queued' AND run_after > now();
UPDATE {schema}.tasks t SET vtime = r.rn
FROM (SELECT id, row_number() OVER (PARTITION BY queue, partition_key ORDER BY id) AS rn
      FROM {schema}.tasks WHERE state = 'queued') r
WHERE t.id = r.id;

DROP INDEX {schema}.tasks_claim_idx;
DROP INDEX {schema}.tasks_claim_limited_idx;
DROP INDEX {schema}.tasks_running_limited_idx;
CREATE INDEX tasks_claim_idx ON {schema}.tasks (queue, priority DESC, vtime, id)
    WHERE state = 'queued' AND NOT limited;
CREATE INDEX tasks_claim_limited_idx ON {schema}.tasks (queue, priority DESC, vtime, id)
    WHERE state = 'queued' AND limited;
CREATE INDEX tasks_key_tail_idx ON {schema}.tasks (queue, partition_key, vtime)
    WHERE state = 'queued';
CREATE INDEX tasks_scheduled_idx ON {schema}.tasks (run_after) WHERE state = 'scheduled';
CREATE INDEX tasks_running_queue_idx ON {schema}.tasks (queue, partition_key)
    WHERE state = 'running';
CREATE INDEX tasks_running_name_idx ON {schema}.tasks (task_name, partition_key)
    WHERE state = 'running';

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

ALTER TABLE {schema}.limits ADD COLUMN max_concurrency_per_key integer
    CHECK (max_concurrency_per_key > 0);

ALTER TABLE {schema}.workers ADD COLUMN held integer NOT NULL DEFAULT 0;
ALTER TABLE {schema}.workers ADD COLUMN running integer NOT NULL DEFAULT 0;
