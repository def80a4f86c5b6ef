"""A document parsing and indexing fleet on tenure.

Files of many types (PDF, HTML, Markdown, text, DOCX) are parsed by a fleet of
tenure workers and indexed into PostgreSQL full-text search, in the same database
as the queue. ``tenure-docs ingest PATH`` enqueues a folder, ``tenure-docs search``
queries the index, ``make demo`` runs the whole thing while killing, redeploying
and adding workers.
"""
