-- A migration (or the functions unit) was applied; the functions unit again, when it
-- was re-applied over functions that drifted from what this release left.
INSERT INTO {schema}.migrations (name) VALUES (%(name)s)
ON CONFLICT (name) DO UPDATE SET applied_at = now()
