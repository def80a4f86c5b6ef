-- Which of these attempts, all held by this worker, has an operator asked to cancel?
-- A `!cancel:<id>` notification only names tasks to look at (any role that can
-- connect may NOTIFY); the row decides. Fenced like a renewal: the attempt and the
-- owner must still be the ones the worker holds. Reached through the primary key and
-- joined to nothing, so the cost is the batch's whatever the statistics say.
SELECT t.id FROM {schema}.tasks t
WHERE t.id = ANY (%(ids)s::bigint[])
  AND t.attempt = (%(attempts)s::integer[])[array_position(%(ids)s::bigint[], t.id)]
  AND t.lease_owner = %(worker)s AND t.state = 'running' AND t.cancel_requested
