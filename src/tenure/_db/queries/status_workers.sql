-- Live workers: what each holds (claimed, including prefetched) and runs now.
SELECT w.id::text AS id, w.host, w.pid, w.state, w.queues, w.concurrency, w.version,
       extract(epoch FROM now() - w.heartbeat_at)::float8 AS heartbeat_age_seconds,
       (SELECT count(*) FROM {schema}.tasks t
        WHERE t.state = 'running' AND t.lease_owner = w.id) AS leases,
       w.held, w.running
FROM {schema}.workers w
WHERE w.state <> 'gone'
ORDER BY w.started_at
