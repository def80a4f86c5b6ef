-- Workers, live ones first, then the most recently gone.
SELECT id::text AS id, host, pid, state, queues, concurrency, version, started_at, heartbeat_at, stopped_at,
       held, running, drain_requested,
       (SELECT count(*) FROM {schema}.tasks t
        WHERE t.state = 'running' AND t.lease_owner = w.id) AS leases
FROM {schema}.workers w
ORDER BY (state = 'gone'), started_at DESC
LIMIT %(limit)s
