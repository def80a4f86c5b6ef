-- Delete one bounded batch of finished tasks older than the cutoff, with their
-- attempts and idempotency keys, in its own short transaction: the oldest rows first
-- through finished_tasks_finished_at_idx, rows another session holds skipped, and
-- every delete an index probe per row, so a batch's locks last milliseconds however
-- long the history is.
WITH doomed AS (
    SELECT id, task_name, idempotency_key FROM {schema}.finished_tasks
    WHERE finished_at < now() - %(older_than)s::interval
    ORDER BY finished_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
),
gone_attempts AS (
    DELETE FROM {schema}.attempts a USING doomed d WHERE a.task_id = d.id
),
gone_keys AS (
    -- through the key's primary key: idempotency_keys has no index on task_id
    DELETE FROM {schema}.idempotency_keys k USING doomed d
    WHERE k.task_name = d.task_name AND k.key = d.idempotency_key AND k.task_id = d.id
),
stale_waiters AS (
    DELETE FROM {schema}.result_waiters WHERE since < now() - interval '1 day'
),
gone AS (
    DELETE FROM {schema}.finished_tasks f USING doomed d WHERE f.id = d.id RETURNING f.id
)
SELECT count(*) FROM gone
