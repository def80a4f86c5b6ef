-- Dead and live row versions of the hot table, as the statistics system counts them,
-- and whether this role may vacuum it (VACUUM skips, with only a warning, a table the
-- role neither owns nor, as the database's owner, holds; PostgreSQL 17 adds MAINTAIN).
SELECT coalesce(s.n_dead_tup, 0), coalesce(s.n_live_tup, 0),
       pg_has_role(c.relowner, 'USAGE')
       OR pg_has_role(d.datdba, 'USAGE')
       OR CASE WHEN current_setting('server_version_num')::int >= 170000
               THEN has_table_privilege(c.oid, 'MAINTAIN') ELSE false END
FROM pg_stat_user_tables s
JOIN pg_catalog.pg_class c ON c.oid = s.relid
JOIN pg_catalog.pg_database d ON d.datname = current_database()
WHERE s.relid = to_regclass(%(table)s)
