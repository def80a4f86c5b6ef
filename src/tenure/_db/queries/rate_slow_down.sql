-- Slow the rate limits these tasks are under (tenure.RetryAfter with slow_down).
SELECT {schema}.rate_slow_down(%(ids)s::bigint[], %(factors)s::double precision[],
                               %(seconds)s::double precision[])
