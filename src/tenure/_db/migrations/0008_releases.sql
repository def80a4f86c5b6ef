-- tenure 0008: which releases migrated this schema (tenure/_db/releases.py).
--
-- A rolling deploy runs workers of two releases on one schema, and a rollback runs
-- the older one again after the newer migrated. Each release that migrates the schema
-- records its version, the oldest release whose workers the schema still serves, and
-- a digest of the schema's functions as it left them. A release older than the newest
-- one recorded never replaces its functions, and refuses to start when the newest
-- no longer serves it. Releases before 0.2.0 ignore the table.
CREATE TABLE {schema}.releases (
    release     text PRIMARY KEY,
    serves_from text NOT NULL,
    functions   text NOT NULL,
    migrated_at timestamptz NOT NULL DEFAULT now()
);
