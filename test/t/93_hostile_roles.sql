-- SQL-level hostility from the three roles that are not superusers
-- (issue 19): a database owner that is not a superuser, the application
-- role the README names, a role with LOGIN and no grant.  The work is
-- test/hostile_roles.py, in a database of its own; each line it prints is
-- one assertion here.
\ir setup.psql
\set out `/usr/bin/python3 test/hostile_roles.py 2>&1`
CREATE TEMP TABLE lines AS
  SELECT l FROM unnest(string_to_array(:'out', E'\n')) AS l WHERE l <> '';
SELECT plan((SELECT count(*)::int + 1 FROM lines));
SELECT is((SELECT count(*)::int FROM lines), 88,
  'hostile_roles.py made every check (a step that could not run is one failed line)');
SELECT ok(l LIKE 'ok %', regexp_replace(l, '^(not )?ok ', '')) FROM lines;
SELECT * FROM finish();
