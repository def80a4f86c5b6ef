-- Workers for the dashboard: live ones, then those gone within the last hour, with
-- the heartbeat's age by the database clock and the leases each holds now.
SELECT w.id::text AS id, w.host, w.pid, w.state, w.queues, w.concurrency, w.version,
       extract(epoch FROM now() - w.heartbeat_at)::float8 AS heartbeat_age_seconds,
       extract(epoch FROM now() - w.started_at)::float8 AS uptime_seconds,
       w.held, w.running, w.drain_requested,
       (SELECT count(*) FROM {schema}.tasks t
        WHERE t.state = 'running' AND t.lease_owner = w.id) AS leases,
       w.outcomes_pending,
       extract(epoch FROM now() - w.outcomes_stalled_since)::float8 AS outcomes_stalled_seconds
FROM {schema}.workers w
WHERE w.state <> 'gone' OR w.stopped_at >= now() - interval '1 hour'
   OR w.heartbeat_at >= now() - interval '1 hour'
ORDER BY (w.state = 'gone'), w.started_at
LIMIT %(limit)s
