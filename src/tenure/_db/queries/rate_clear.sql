-- Clear an operator's rate limit (tenure rates clear): the code's, if it declares
-- one, is in force again from the next claim. The rows it removed.
DELETE FROM {schema}.rate_limits
WHERE scope = %(scope)s AND name = %(name)s AND kind = %(kind)s AND key = %(key)s
  AND source = 'operator'
RETURNING 1
