-- A dump made under each released version restores where the current one
-- is installed, with pg_restore -1, and syncs there; a scheduled database
-- restored where pg_cron is absent can drop the extension (issue 18,
-- items 3 and 4).  The work is test/dump_restore.sh, in a cluster of its
-- own; each line it prints is one assertion here.
\ir setup.psql
\set out `test/dump_restore.sh 2>&1`
CREATE TEMP TABLE lines AS
  SELECT l FROM unnest(string_to_array(:'out', E'\n')) AS l WHERE l <> '';
SELECT plan((SELECT count(*)::int + 1 FROM lines));
-- six checks for each version (0.1 ... the current one), two for pg_cron
SELECT is((SELECT count(*)::int FROM lines),
          6 * (4 + CASE WHEN (SELECT default_version FROM pg_available_extensions WHERE name = 'ade') <> '0.4'
                        THEN 1 ELSE 0 END) + 2,
  'dump_restore.sh made every check (a version whose dump did not restore is one failed line)');
SELECT ok(l LIKE 'ok %', regexp_replace(l, '^(not )?ok ', '')) FROM lines;
SELECT * FROM finish();
