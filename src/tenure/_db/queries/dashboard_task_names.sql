-- Task names seen in the hot table and among recently finished tasks, for the
-- dashboard's filter suggestions.
SELECT DISTINCT task_name FROM (
    SELECT task_name FROM {schema}.tasks
    UNION ALL
    SELECT task_name FROM {schema}.finished_tasks WHERE finished_at >= now() - interval '1 day'
) names
ORDER BY 1
LIMIT 500
