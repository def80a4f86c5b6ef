CREATE TABLE IF NOT EXISTS {schema}.migrations (
    name       text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
