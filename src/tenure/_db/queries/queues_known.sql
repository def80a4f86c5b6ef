-- The queues an operator can name, as tenure status lists them (loose index scans).
SELECT n FROM {schema}.queue_names(%(cap)s) n WHERE n IS NOT NULL ORDER BY n
