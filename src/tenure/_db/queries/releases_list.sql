-- Every release that migrated the schema (tenure/_db/releases.py orders them by version).
SELECT release, serves_from, functions, migrated_at FROM {schema}.releases
