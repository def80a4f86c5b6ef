-- What one tenure schema holds, to tell schemas apart: its live workers and its
-- tasks (waiting, running and finished). Each task table is counted exactly up to
-- %(cap)s rows, so a deep history costs no more than that; capped says one reached it.
SELECT w.live, hot.n + cold.n, hot.n >= %(cap)s OR cold.n >= %(cap)s
FROM (SELECT count(*) AS live FROM {schema}.workers WHERE state <> 'gone') w,
     (SELECT count(*) AS n FROM (SELECT 1 FROM {schema}.tasks LIMIT %(cap)s) t) hot,
     (SELECT count(*) AS n FROM (SELECT 1 FROM {schema}.finished_tasks LIMIT %(cap)s) f) cold
