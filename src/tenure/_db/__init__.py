"""The database layer: connections, named SQL statements, migrations."""
