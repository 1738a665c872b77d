-- Key files, standbys and trust, each in throwaway clusters of its own
-- (issue 13, each failing on 0.3): the key-encryption key file is made
-- durably (test/kek_durable.sh: O_EXCL, fsynced, linked, the data
-- directory fsynced); a standby promoted after a rotation opens every
-- secret with nothing copied (test/standby.sh), and so does one made
-- before the extension, whose key-encryption key comes with the WAL
-- (test/standby_first.sh, issue 23); ade.ca_file, when set, is
-- the only trust anchor (test/ca_narrowing.sh, in a mount namespace whose
-- system store trusts the server).  A script that cannot run here (no
-- strace, not root) says "skip", and its test is skipped.
\ir setup.psql
SELECT plan(14);
\set kek `test/kek_durable.sh 2>&1`
\set standby `test/standby.sh 2>&1`
\set standby1 `test/standby_first.sh 2>&1`
\set ca `test/ca_narrowing.sh 2>&1`
SELECT CASE WHEN :'kek' LIKE 'skip:%' THEN skip(:'kek', 1)
  ELSE is(:'kek'::text, 'ok ok ok ok',
          'the key-encryption key file is opened with O_EXCL, fsynced, linked into place, and the data directory fsynced after the link') END;
SELECT CASE WHEN :'standby' LIKE 'skip:%' THEN skip(:'standby', 1)
  ELSE is(:'standby'::text, 'refresh=ok sync=ok',
          'a standby promoted after a rotation on the primary opens every secret: the account is read and a sync runs') END;
SELECT CASE WHEN :'standby1' LIKE 'skip:%' THEN skip(:'standby1', 1)
  ELSE is(:'standby1'::text, 'kek=ok node=said status=ok missing=said standby_sync=refused standby_call=refused standby_ask=refused relog=ok replace=ok lost=refused reinstall=ok refresh=ok sync=ok crash=kept',
          'a standby made before CREATE EXTENSION gets the key-encryption key from the WAL (again after losing it, and in place of another one), says in its own ade_status when it lacks pg_cron or the key file, reads ade_status, refuses ade_sync(), a release, ade_refresh_account() and ade_add_token() as a standby with nothing sent, gets the key again after a pooled backend turns ade.replicate_key on, has a damaged file or a link to nowhere replaced without stopping, keeps its key when the primary lost its own (the update refuses, neither a new install elsewhere nor a failing run copies the new key over it), takes a reinstalled primary''s new key once a token proves it, and promoted opens every secret; crash recovery keeps a key file copied in since') END;
SELECT CASE WHEN :'ca' LIKE 'skip:%' THEN skip(:'ca', 1)
  ELSE is(:'ca'::text, 'b=ok default=ok a=refused',
          'with ade.ca_file set, only it is trusted: a server the system store trusts but ade.ca_file does not is refused') END;

-- what a node lacks, from its settings (issue 23): this server is set as
-- the README says; other values as another node could have them
SELECT is(ade_node_problem(), NULL, 'a server set up as the README says (ade and pg_cron preloaded, cron.database_name this database) lacks nothing');
SELECT alike(ade_node_problem('pg_cron, pg_stat_statements'), 'ade is not in shared_preload_libraries on this server%',
            'a node without ade preloaded says so');
SELECT alike(ade_node_problem('ade'), 'pg_cron is not in shared_preload_libraries on this server%',
            'a node without pg_cron preloaded, where pg_cron is installed, says the ade_sync job would not run there');
SELECT is(ade_node_problem(E'"pg_cron",\t$libdir/ade.so'), NULL, 'shared_preload_libraries is read as the server reads it (quotes, tabs, $libdir/, .so)');
SELECT is(ade_node_problem('pg_cron,/usr/lib/postgresql/15/lib/ade.so'), NULL, 'a preloaded library named by its path is preloaded');
SELECT alike(ade_node_problem('pg_cron,adex'), 'ade is not in shared_preload_libraries%', 'another library whose name begins with ade is not ade');
SELECT ok(ade_preloaded(), 'this server preloaded ade: its WAL resource manager is registered (what ade_node_problem() asks of this server)');
SELECT alike(ade_node_problem(NULL, 'postgres'), 'cron.database_name is ''postgres'' on this server, not this database%',
            'a node whose cron.database_name is another database says so');
SET ROLE ade_reader;
SELECT is((SELECT count(*) FROM ade_problems() WHERE problem = 'node_setup'), 0::bigint,
          'ade_reader reads the node check through ade_problems() (superuser-only settings, SECURITY DEFINER): nothing lacks here');
SELECT isnt(ade_node_problem('pg_cron'), NULL, 'ade_reader may call ade_node_problem() (it reads settings only superusers read)');
RESET ROLE;
SELECT * FROM finish();
