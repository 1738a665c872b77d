-- A fresh CREATE EXTENSION ade (the install script built from src/schema/)
-- and CREATE EXTENSION ade VERSION '0.1' followed by ALTER EXTENSION ade
-- UPDATE (the released scripts and the hand-written upgrade deltas) give the
-- same extension.  test/upgrade_equals_install.sh runs each path in a
-- cluster of its own and compares test/describe_extension.sql of both:
-- every object of the extension's schema with its definition, owner, grants
-- and comment, every column, constraint, index and trigger, the
-- pg_extension_config_dump entries, and the roles the objects grant to.  A
-- difference fails with the diff.
\ir setup.psql
SELECT plan(4);
\set diff `test/upgrade_equals_install.sh "$ADE_TEST_TMP/eq"; echo "exit $?"`
\set members `grep -c ' | member | yes$' "$ADE_TEST_TMP/eq/fresh.txt"`
\set version `grep '^extension ade | version' "$ADE_TEST_TMP/eq/upgraded.txt" | cut -d'|' -f3 | cut -d, -f1 | tr -d ' '`
\set tracked `git ls-files sql/ | grep -c -- "ade--$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" ade.control)\.sql" || true`
SELECT is(:'version'::text, (SELECT default_version FROM pg_available_extensions WHERE name = 'ade'),
  'ALTER EXTENSION ade UPDATE from 0.1 reaches the version a fresh install has');
SELECT cmp_ok(:'members'::int, '>=', (SELECT count(*)::int FROM pg_depend
                                        WHERE refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ade') AND deptype = 'e'),
  'the description lists every member object of the extension');
SELECT is(:'diff'::text, 'exit 0', 'a fresh install and 0.1 + ALTER EXTENSION ade UPDATE give the same functions, tables, views, grants, roles, comments and dump registrations');
SELECT is(:'tracked'::int, 0, 'the install script of the version in development is built, not committed');
SELECT * FROM finish();
