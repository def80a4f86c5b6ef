-- One heartbeat: renew every lease this worker still holds and touch its worker row.
-- Returns the tasks it still owns; anything missing was taken over or finished.
WITH me AS (
    UPDATE {schema}.workers
    SET heartbeat_at = now(),
        state = %(state)s
    WHERE id = %(worker)s
    RETURNING id
),
renewed AS (
    UPDATE {schema}.tasks t
    SET lease_expires_at = now() + coalesce(t.lease, %(lease)s::interval)
    FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS u(id, attempt)
    WHERE t.id = u.id AND t.attempt = u.attempt AND t.lease_owner = %(worker)s
      AND t.state = 'running'
    RETURNING t.id
)
SELECT (SELECT count(*) FROM me), array(SELECT id FROM renewed)
