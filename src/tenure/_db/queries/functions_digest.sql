-- A digest of the schema's functions as installed: each one's whole definition
-- (arguments and their defaults, result, language, volatility, settings, body).
-- Equal digests, equal functions, whoever installed them.
SELECT md5(coalesce(string_agg(
           pg_get_functiondef(p.oid),
           E'\n' ORDER BY p.proname, pg_get_function_identity_arguments(p.oid)), ''))
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s AND p.prokind IN ('f', 'p')
