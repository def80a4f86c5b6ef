SELECT name FROM {schema}.migrations
