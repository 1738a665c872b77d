-- Answers sent ahead are not lost to a step that took long: nothing drives
-- the requests ahead while the loop waits for hosts or applies a page, and
-- libcurl would call an answer that arrived meanwhile a timeout (attack
-- review of issue 21, round 2).  A run whose first step waits 2.5 s for an
-- application holding hosts, with ade.http_timeout at 1 s, must still take
-- every token's answer.
\ir setup.psql
SELECT plan(2);
\! for i in 1 2 3; do test/add-token.sh "P $i" CK_st$i >/dev/null; python3 test/mockctl.py devices CK_st$i --generate 3 --prefix ST$i >/dev/null; done
SELECT count(*) FROM ade_sync() \g /dev/null
\! for i in 1 2 3; do python3 test/mockctl.py devices CK_st$i --generate 1 --start 20 --prefix ST$i >/dev/null; done
SET ade.http_timeout = 1000;
SET ade.max_concurrent_requests = 4;
\! (psql -XAtq -d "$ADE_TEST_DB" -c "BEGIN; LOCK TABLE hosts IN EXCLUSIVE MODE; SELECT pg_sleep(2.5); COMMIT;" >/dev/null 2>&1 &); sleep 0.3
CREATE TEMP TABLE r AS SELECT * FROM ade_sync();
SELECT is((SELECT count(*)::int FROM r WHERE error IS NULL), 3, 'a step that waited on hosts fails no answer ABM already gave');
SELECT is((SELECT sum(added)::int FROM r), 3, 'and every new device is applied');
SELECT * FROM finish();
