-- tenure 0007: a worker publishes outcomes it has finished and not yet written.
--
-- Each heartbeat sets how many outcomes wait in the worker and, while they have
-- waited longer than a lease with no write settling any, since when. The dashboard
-- shows a worker whose outcomes do not land; `/readyz` and `/metrics` say the same
-- from the worker itself. Added with defaults: a worker that does not set them
-- leaves them at "nothing waiting".
ALTER TABLE {schema}.workers
    ADD COLUMN outcomes_pending integer NOT NULL DEFAULT 0,
    ADD COLUMN outcomes_stalled_since timestamptz;
