INSERT INTO {schema}.migrations (name) VALUES (%(name)s)
