-- make demo, and its stop, twice in a row (issue 14): the README's second
-- command works on a machine where it ran before, and stopping twice is
-- not an error; and every example of the README runs, as written, against
-- the demo (issue 20).  A directory and port of this test's own.
\ir setup.psql
SELECT plan(6);
\set first `ADE_DEMO_DIR="$ADE_TEST_TMP/demo" ADE_DEMO_PORT=54348 ADE_DEMO_DEVICES=200 test/demo.sh > "$ADE_TEST_TMP/demo1.log" 2>&1; echo "rc=$?"; grep -c '^The cluster and the mock ABM keep running' "$ADE_TEST_TMP/demo1.log"`
-- every example of the README, as written, against the demo it ships
-- (issue 20): its database, its org name, its token file
\set readme `PGHOST="$ADE_TEST_TMP/demo/sock" PGPORT=54348 python3 test/readme_run.py README.md "$ADE_TEST_TMP/demo/abm" 2>&1`
\set demo_after `PGHOST="$ADE_TEST_TMP/demo/sock" PGPORT=54348 psql -d mdm -XAtc "SELECT org_name || ' ' || (SELECT count(*) FROM cron.job WHERE jobname = 'ade_sync') FROM abm_tokens" 2>&1`
\set second `ADE_DEMO_DIR="$ADE_TEST_TMP/demo" ADE_DEMO_PORT=54348 ADE_DEMO_DEVICES=200 test/demo.sh > "$ADE_TEST_TMP/demo2.log" 2>&1; echo "rc=$?"; grep -c '^The cluster and the mock ABM keep running' "$ADE_TEST_TMP/demo2.log"`
\set stop1 `ADE_DEMO_DIR="$ADE_TEST_TMP/demo" test/demo.sh stop >/dev/null 2>&1; echo "rc=$?"`
\set stop2 `ADE_DEMO_DIR="$ADE_TEST_TMP/demo" test/demo.sh stop >/dev/null 2>&1; echo "rc=$?"`
SELECT is(:'first'::text, E'rc=0\n1', 'make demo runs to its end (the sync ran, the connection string printed)');
SELECT alike(:'readme'::text, 'ok %', 'every example of the README runs as written against make demo');
SELECT is(:'demo_after'::text, 'Example School 1', 'and leaves the demo''s token and its job in place (the Uninstalling section takes them back)');
SELECT is(:'second'::text, E'rc=0\n1', 'make demo again, over the first: the same');
SELECT is(:'stop1'::text, 'rc=0', 'make demo-stop stops it');
SELECT is(:'stop2'::text, 'rc=0', 'and again, with nothing running, is not an error');
SELECT * FROM finish();
