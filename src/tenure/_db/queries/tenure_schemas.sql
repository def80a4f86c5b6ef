-- The schemas of this database that hold tenure's tables (its migrations table and
-- its task table), for the one line that says which exist when a command was pointed
-- at another. Reads the catalogs only, which every role may read.
SELECT n.nspname, has_schema_privilege(n.oid, 'USAGE')
FROM pg_catalog.pg_namespace n
WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class c
              WHERE c.relnamespace = n.oid AND c.relname = 'migrations' AND c.relkind = 'r')
  AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c
              WHERE c.relnamespace = n.oid AND c.relname = 'tasks' AND c.relkind IN ('r', 'p'))
ORDER BY n.nspname
