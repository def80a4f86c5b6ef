-- This release migrated the schema: what it serves and how it left the functions.
INSERT INTO {schema}.releases (release, serves_from, functions)
VALUES (%(release)s, %(serves_from)s, %(functions)s)
ON CONFLICT (release) DO UPDATE
SET serves_from = excluded.serves_from, functions = excluded.functions, migrated_at = now()
