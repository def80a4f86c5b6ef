SELECT task_id, verdict
FROM {schema}.complete(%(worker)s, %(ids)s::bigint[], %(attempts)s::integer[],
                       %(outcomes)s::text[], %(results)s::jsonb[], %(errors)s::text[],
                       %(delays)s::double precision[])
