-- Dead and live row versions of the hot table, as the statistics system counts them.
SELECT coalesce(s.n_dead_tup, 0), coalesce(s.n_live_tup, 0)
FROM pg_stat_user_tables s
WHERE s.relid = to_regclass(%(table)s)
