-- tenure 0006: fewer index entries written per task.
--
-- * attempts_ended_at_idx is dropped: no statement reads attempts by end time (prune
--   deletes them by task id), yet every attempt paid for an entry.
-- * Only work under a limit pays for the limits' running counts. The running-count
--   indexes by queue/key and name/key now hold only rows flagged `limited`: a claim
--   of unlimited work (the common case) writes two index entries fewer, which is a
--   fifth of the database's work per task in a no-op drain. So that the counts stay
--   exact, every row a limit applies to is flagged, whatever its state: rows of a
--   task name or queue with a limit (here, at send, and when a limit is published),
--   and every row claimed through a limit bucket.

DROP INDEX {schema}.attempts_ended_at_idx;

DROP INDEX {schema}.tasks_running_queue_idx;
DROP INDEX {schema}.tasks_running_name_idx;

UPDATE {schema}.tasks t SET limited = true
WHERE NOT t.limited
  AND (EXISTS (SELECT 1 FROM {schema}.limits l
               WHERE l.task_name = t.task_name
                 AND (l.max_concurrency IS NOT NULL OR l.max_concurrency_per_key IS NOT NULL))
       OR EXISTS (SELECT 1 FROM {schema}.queues q
                  WHERE q.name = t.queue
                    AND (q.max_concurrency IS NOT NULL OR q.max_concurrency_per_key IS NOT NULL)));

CREATE INDEX tasks_running_limited_queue_idx ON {schema}.tasks (queue, partition_key)
    WHERE state = 'running' AND limited;
CREATE INDEX tasks_running_limited_name_idx ON {schema}.tasks (task_name, partition_key)
    WHERE state = 'running' AND limited;
