-- High availability on pg_auto_failover (issue 23), in clusters of its
-- own (test/failover.sh): a monitor and two nodes with ade and pg_cron
-- preloaded, ade installed after the formation; a first sync, a key
-- rotation, the sync scheduled; the primary killed while a scheduled sync
-- that committed its first page waits for ABM for its second; the standby promoted runs the scheduled sync by itself,
-- and then hosts and assignments equal ABM's devices, no serial twice,
-- every secret opens, no run is stuck; the old primary rejoins as a
-- standby that reads ade_status and hosts and refuses ade_sync().  Skipped
-- where pg_autoctl is not installed.
\ir setup.psql
SELECT plan(1);
\set failover `test/failover.sh 2>&1 | tail -1`
SELECT CASE WHEN :'failover' LIKE 'skip:%' THEN skip(:'failover', 1)
  ELSE ok(:'failover' ~ '^paged=10 promoted=ok synced=ok equal=ok twice=0 secrets=ok stuck=0 rejoined=ok reads=ok standby_sync=refused down=\d+s promoted_after=\d+s$',
          'the primary killed mid-sync (one page committed): the standby is promoted, syncs by itself, loses nothing; the old primary rejoins as a standby with the same key file: ' || :'failover') END;
SELECT * FROM finish();
