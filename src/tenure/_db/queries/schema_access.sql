-- For commands that must not change the schema: whether this role may use it and
-- whether it holds tenure's migrations table (no row: there is no such schema).
-- Reads the catalogs only, which every role may read.
SELECT has_schema_privilege(n.oid, 'USAGE'),
       EXISTS (SELECT 1 FROM pg_catalog.pg_class c
               WHERE c.relnamespace = n.oid AND c.relname = 'migrations')
FROM pg_catalog.pg_namespace n
WHERE n.nspname = %(schema)s
