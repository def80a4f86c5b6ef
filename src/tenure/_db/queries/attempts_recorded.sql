-- Which of these attempts this worker has already recorded (an outcome written
-- by a try whose answer was lost). The reaper's record of this worker's expired
-- lease names this worker too, but is not an outcome it wrote.
SELECT a.task_id
FROM {schema}.attempts a
JOIN unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS u(id, attempt)
  ON a.task_id = u.id AND a.attempt = u.attempt
WHERE a.worker_id = %(worker)s
  AND a.outcome <> 'lease_expired'
