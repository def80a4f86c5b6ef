-- Live workers with the leases they hold.
SELECT w.id, w.host, w.pid, w.state, w.queues, w.concurrency, w.version,
       extract(epoch FROM now() - w.heartbeat_at) AS heartbeat_age,
       (SELECT count(*) FROM {schema}.tasks t
        WHERE t.state = 'running' AND t.lease_owner = w.id) AS leases
FROM {schema}.workers w
WHERE w.state <> 'gone'
ORDER BY w.started_at
