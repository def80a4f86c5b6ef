-- Ask a live worker to drain, as SIGTERM would; it sees the request at its next heartbeat.
UPDATE {schema}.workers SET drain_requested = true
WHERE id = %(worker)s AND state <> 'gone'
RETURNING id
