-- Workers that stopped heartbeating long ago are gone; their leases expire on their own.
UPDATE {schema}.workers
SET state = 'gone', stopped_at = heartbeat_at
WHERE state <> 'gone' AND heartbeat_at < now() - %(after)s::interval
RETURNING id
