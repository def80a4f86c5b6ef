-- Which server answers: the address and port it listens on as it sees them ('local'
-- over a unix socket), whether it is a standby (in recovery), its version, and whether
-- it waits for synchronous standbys at commit, and its clock. Needs no privilege, reads
-- no table.
SELECT coalesce(host(inet_server_addr()), 'local') || ':' || current_setting('port') AS server,
       pg_is_in_recovery() AS in_recovery,
       current_setting('server_version') AS version,
       current_setting('synchronous_standby_names') <> '' AS synchronous_standbys,
       clock_timestamp() AS clock
