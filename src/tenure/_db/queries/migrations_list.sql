-- Every migration applied to the schema, with when, in the order they were applied.
SELECT name, applied_at FROM {schema}.migrations ORDER BY applied_at, name
