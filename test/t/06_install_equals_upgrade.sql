-- A fresh CREATE EXTENSION ade (the install script built from src/schema/)
-- and CREATE EXTENSION ade VERSION '0.1' followed by ALTER EXTENSION ade
-- UPDATE (the released scripts and the hand-written upgrade deltas) give the
-- same extension: test/describe_extension.sql lists every member object
-- with its definition, owner, grants and comment, every column, constraint,
-- index and trigger, the pg_extension_config_dump entries and the roles the
-- objects grant to; the two lists must be equal, and a difference fails
-- with the diff.
\ir setup.psql
SELECT plan(3);
\! psql -XAtq -v ON_ERROR_STOP=1 -d "$ADE_TEST_DB" -c 'DROP DATABASE IF EXISTS ade_upgraded' -c 'CREATE DATABASE ade_upgraded'
\! psql -XAtq -v ON_ERROR_STOP=1 -d ade_upgraded -c "SET client_min_messages = warning" -c "CREATE EXTENSION ade VERSION '0.1'" -c 'ALTER EXTENSION ade UPDATE'
\! psql -X -d ade_upgraded -f test/describe_extension.sql > "$ADE_TEST_TMP/upgraded.txt" 2>&1
\! psql -X -d "$ADE_TEST_DB" -f test/describe_extension.sql > "$ADE_TEST_TMP/fresh.txt" 2>&1
\set members `grep -c ' | member | yes$' "$ADE_TEST_TMP/fresh.txt"`
\set upgraded_version `psql -XAtq -d ade_upgraded -c "SELECT extversion FROM pg_extension WHERE extname = 'ade'"`
\set diff `diff -u "$ADE_TEST_TMP/fresh.txt" "$ADE_TEST_TMP/upgraded.txt"`
SELECT is(:'upgraded_version'::text, (SELECT default_version FROM pg_available_extensions WHERE name = 'ade'),
  'ALTER EXTENSION ade UPDATE from 0.1 reaches the version a fresh install has');
SELECT cmp_ok(:'members'::int, '>=', (SELECT count(*)::int FROM pg_depend
                                        WHERE refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ade') AND deptype = 'e'),
  'the description lists every member object of the extension');
SELECT is(:'diff'::text, ''::text, 'a fresh install and 0.1 + ALTER EXTENSION ade UPDATE give the same functions, tables, views, grants, comments and dump registrations');
\! psql -XAtq -d "$ADE_TEST_DB" -c 'DROP DATABASE ade_upgraded'
SELECT * FROM finish();
