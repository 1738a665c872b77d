-- Key material stays in a backend no longer than it is used (issue 19,
-- item 5): after a sync, an idle backend holds neither the key-encryption
-- key nor the token's secrets; a session that reads ade_status never opens
-- the key file.  0.4 kept the KEK and the data keys in every backend that
-- read ade_status or synced, for its life.  The work is test/key_memory.py
-- (as root: it reads the backends' memory and traces them); each line it
-- prints is one assertion here.
\ir setup.psql
\! test/add-token.sh Keys CK_keys
\! python3 test/mockctl.py devices CK_keys --generate 3 --prefix K >/dev/null
\set out `/usr/bin/python3 test/key_memory.py "$ADE_TEST_TMP/CK_keys.json" 2>&1`
CREATE TEMP TABLE lines AS
  SELECT l FROM unnest(string_to_array(:'out', E'\n')) AS l WHERE l <> '';
SELECT CASE WHEN (SELECT l FROM lines LIMIT 1) LIKE 'skip:%' THEN 1
            ELSE (SELECT count(*)::int + 1 FROM lines) END AS n \gset
SELECT plan(:n);
SELECT CASE WHEN (SELECT l FROM lines LIMIT 1) LIKE 'skip:%' THEN skip((SELECT l FROM lines LIMIT 1), 1)
            ELSE is((SELECT count(*)::int FROM lines), 10, 'key_memory.py made every check') END;
SELECT ok(l LIKE 'ok %', regexp_replace(l, '^(not )?ok ', '')) FROM lines WHERE l NOT LIKE 'skip:%';
SELECT * FROM finish();
