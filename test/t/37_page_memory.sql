-- A run's memory does not grow with the pages it applies: what a page
-- allocates (the answer, its parse, the queries' results) goes when the
-- page is done.  SPI leaves its own procedure context current after each
-- query, which lives until the run ends: 0.5 before this test kept every
-- page of a fetch there (90 MB for 20,000 devices, 4 GB for 1,000,000).
-- The backend's private memory (RssAnon) is sampled from outside while a
-- fetch of 4,000 devices runs, then one of 24,000, both in pages of 1,000.
\ir setup.psql
SELECT plan(2);
\! test/add-token.sh Small CK_mem_small >/dev/null
\! test/add-token.sh Large CK_mem_large >/dev/null
\! python3 test/mockctl.py devices CK_mem_small --generate 4000 --prefix MS >/dev/null
\! python3 test/mockctl.py devices CK_mem_large --generate 24000 --prefix ML >/dev/null
SELECT id AS small FROM abm_tokens WHERE consumer_key = 'CK_mem_small' \gset
SELECT id AS large FROM abm_tokens WHERE consumer_key = 'CK_mem_large' \gset
SELECT pg_backend_pid() AS me \gset
\setenv ADE_ME :me
\! rm -f "$ADE_TEST_TMP/mem.stop"; test/peak_memory.sh "$ADE_ME" "$ADE_TEST_TMP/mem.small" "$ADE_TEST_TMP/mem.stop" &
SELECT count(*) FROM ade_sync(:small) \g /dev/null
\! touch "$ADE_TEST_TMP/mem.stop"; sleep 0.2; rm -f "$ADE_TEST_TMP/mem.stop"
\! test/peak_memory.sh "$ADE_ME" "$ADE_TEST_TMP/mem.large" "$ADE_TEST_TMP/mem.stop" &
SELECT count(*) FROM ade_sync(:large) \g /dev/null
\! touch "$ADE_TEST_TMP/mem.stop"; sleep 0.2
\set small_kb `cat "$ADE_TEST_TMP/mem.small"`
\set large_kb `cat "$ADE_TEST_TMP/mem.large"`
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE deleted_at IS NULL), 28000, 'both fetches applied');
SELECT cmp_ok(:large_kb - :small_kb, '<', 12288,
  format('six times the pages take less than 12 MB more private memory (%s kB, then %s kB)', :small_kb, :large_kb));
SELECT * FROM finish();
