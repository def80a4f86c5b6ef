-- The database clock, which every age on the dashboard is measured against.
SELECT now()
