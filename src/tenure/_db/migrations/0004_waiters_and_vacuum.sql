-- tenure 0004: result waiters, and autovacuum tuned for the hot table.
--
-- * result_waiters: a client waiting in handle.result() registers here, so a
--   completion sends a "done" notification only when someone waits for one of the
--   tasks it finished (NOTIFY is serialised server-wide at commit; a busy fleet
--   should not pay for it on every batch).
-- * tasks is small but churns: every task is inserted, updated by its claim and
--   deleted by its completion. Vacuum and analyze it after a small fraction of
--   change, without cost-based delays, so dead index entries and stale statistics
--   never pile up behind a burst.

CREATE TABLE {schema}.result_waiters (
    task_id  bigint NOT NULL,
    listener integer NOT NULL,   -- backend pid of the waiting client's connection
    since    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, listener)
);

ALTER TABLE {schema}.tasks SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
