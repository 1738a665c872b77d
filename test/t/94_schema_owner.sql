-- A database owner that is not a superuser runs nothing as anyone else
-- through ade's schema; ade works in a schema whose name needs quoting
-- (issue 19, item 1).  The work is test/schema_owner.sh, in databases of
-- their own; each line it prints is one assertion here.
\ir setup.psql
\set out `test/schema_owner.sh 2>&1`
CREATE TEMP TABLE lines AS
  SELECT l FROM unnest(string_to_array(:'out', E'\n')) AS l WHERE l <> '';
SELECT plan((SELECT count(*)::int + 1 FROM lines));
SELECT is((SELECT count(*)::int FROM lines), 16,
  'schema_owner.sh made every check (a setup that failed is one failed line)');
SELECT ok(l LIKE 'ok %', regexp_replace(l, '^(not )?ok ', '')) FROM lines;
SELECT * FROM finish();
