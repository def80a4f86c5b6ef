-- tenure 0003: requests an operator makes of running work.
--
-- * cancel_requested: a running task was asked to stop; its worker cancels it and
--   records 'cancelled' (fenced like any outcome), and a lease that expires on a
--   cancelled task ends it as cancelled instead of running it again.
-- * drain_requested: an operator asked a worker to drain (as SIGTERM would).

ALTER TABLE {schema}.tasks ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
ALTER TABLE {schema}.workers ADD COLUMN drain_requested boolean NOT NULL DEFAULT false;

-- What a finished task needs to run again when an operator retries it.
ALTER TABLE {schema}.finished_tasks ADD COLUMN max_attempts integer;
ALTER TABLE {schema}.finished_tasks ADD COLUMN max_crashes integer;
ALTER TABLE {schema}.finished_tasks ADD COLUMN lease interval;
ALTER TABLE {schema}.finished_tasks ADD COLUMN limited boolean NOT NULL DEFAULT false;
