-- tenure 0005: statistics that let status pages and checks estimate a deep backlog.
--
-- * tasks_queue_name_state: the most common (task name, queue, state) combinations,
--   gathered by ANALYZE (autovacuum analyzes tasks after 2 % of change, see 0004).
--   The planner uses it to estimate "queued in queue q" without assuming queue and
--   state independent, which is what `tenure status` shows over its counting cap;
--   the unknown-task check reads its list instead of scanning a deep backlog.
--   Extended statistics cost nothing on writes, only a little at ANALYZE.

CREATE STATISTICS {schema}.tasks_queue_name_state (mcv)
    ON task_name, queue, state FROM {schema}.tasks;
