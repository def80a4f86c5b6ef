-- Queued task names in these queues that the calling worker cannot run.
-- While the hot table is small (16 MB or less) the queued rows are read. Over a deep
-- backlog that read would scan millions of rows every minute, so the names come
-- from the planner's statistics instead (tasks_queue_name_state: the common
-- (name, queue, state) combinations that ANALYZE found); a name too rare to be in
-- that list is reported once the backlog has shrunk. PostgreSQL shows extended
-- statistics to the table's owner only, so a role that does not own it (one granted
-- only DML) reads at most 10,000 of the queued rows of these queues instead: a name
-- common enough to be in the statistics is as likely to be among them.
WITH deep AS (
    SELECT pg_relation_size(c.oid) > 16 * 1024 * 1024 AS yes,
           pg_has_role(c.relowner, 'USAGE') AS sees_stats
    FROM pg_catalog.pg_class c
    WHERE c.oid = '{schema}.tasks'::regclass
),
stats AS (
    SELECT s.attnames, s.most_common_vals AS vals
    FROM pg_catalog.pg_stats_ext s
    JOIN pg_catalog.pg_namespace n ON n.nspname = s.schemaname
    JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
    WHERE c.oid = '{schema}.tasks'::regclass
      AND s.statistics_name = 'tasks_queue_name_state'
      AND s.most_common_vals IS NOT NULL
),
head AS (
    SELECT t.task_name
    FROM {schema}.tasks t
    WHERE (SELECT yes AND NOT sees_stats FROM deep)
      AND t.state = 'queued' AND t.queue = ANY (%(queues)s::text[])
    LIMIT 10000
),
seen AS (
    SELECT t.task_name
    FROM {schema}.tasks t
    WHERE NOT (SELECT yes FROM deep)
      AND t.state = 'queued' AND t.queue = ANY (%(queues)s::text[])
    UNION
    SELECT task_name FROM head
    UNION
    SELECT st.vals[i][array_position(st.attnames, 'task_name'::name)]
    FROM stats st, generate_subscripts(st.vals, 1) AS i
    WHERE (SELECT yes AND sees_stats FROM deep)
      AND st.vals[i][array_position(st.attnames, 'state'::name)] = 'queued'
      AND st.vals[i][array_position(st.attnames, 'queue'::name)] = ANY (%(queues)s::text[])
)
SELECT task_name FROM seen
WHERE task_name IS NOT NULL AND NOT (task_name = ANY (%(names)s::text[]))
LIMIT 20
