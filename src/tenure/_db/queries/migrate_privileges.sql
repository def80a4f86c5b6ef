-- Why a migration was refused a privilege: who we are, whether the schema exists and
-- who owns it, and what this role may create. Read after the failed transaction.
SELECT current_user::text,
       current_database()::text,
       n.oid IS NOT NULL,
       coalesce(pg_get_userbyid(n.nspowner)::text, ''),
       coalesce(pg_has_role(n.nspowner, 'USAGE'), false),
       has_database_privilege(current_database(), 'CREATE')
FROM (SELECT 1) AS one
LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = %(schema)s
