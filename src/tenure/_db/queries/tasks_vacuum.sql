-- Vacuum the hot table now; skipped at once if another vacuum (ours or autovacuum's)
-- already holds it.
VACUUM (SKIP_LOCKED) {schema}.tasks
