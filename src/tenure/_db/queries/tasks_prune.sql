-- Delete one bounded batch of finished tasks older than the cutoff, with their
-- attempts and idempotency keys; short transactions, no long locks.
WITH doomed AS (
    SELECT id FROM {schema}.finished_tasks
    WHERE finished_at < now() - %(older_than)s::interval
    ORDER BY finished_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
),
gone_attempts AS (
    DELETE FROM {schema}.attempts a USING doomed d WHERE a.task_id = d.id
),
gone_keys AS (
    DELETE FROM {schema}.idempotency_keys k USING doomed d WHERE k.task_id = d.id
),
stale_waiters AS (
    DELETE FROM {schema}.result_waiters WHERE since < now() - interval '1 day'
),
gone AS (
    DELETE FROM {schema}.finished_tasks f USING doomed d WHERE f.id = d.id RETURNING f.id
)
SELECT count(*) FROM gone
