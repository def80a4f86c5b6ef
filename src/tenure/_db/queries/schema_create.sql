-- Run only when the schema does not exist yet: PostgreSQL checks CREATE on the database
-- before it looks for the schema, so even IF NOT EXISTS would refuse a role that owns
-- a schema created for it beforehand. Runs under migrate's advisory lock, after the
-- catalog read that found no such schema; IF NOT EXISTS still covers a schema created
-- by something other than tenure in between.
CREATE SCHEMA IF NOT EXISTS {schema}
