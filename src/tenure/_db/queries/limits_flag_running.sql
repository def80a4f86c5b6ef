-- Flag the running rows a published limit applies to, so the limit buckets count
-- them: rows claimed freely before the limit appeared, or by a claim that raced its
-- publication. A worker runs it after publishing its limits and queue settings, in
-- a statement of its own: it reads only running rows and locks the few it flags, so
-- a heartbeat renewing them never waits behind the scan of a deep backlog.
UPDATE {schema}.tasks t SET limited = true
WHERE t.state = 'running' AND NOT t.limited
  AND {schema}.is_limited(t.task_name, t.queue, false)
