/*-------------------------------------------------------------------------
 *
 * status.sql
 *		Source of the ade install script: what an admin and an application
 *		read: the status views and NOTIFY ade_hosts.
 *
 * Owns ade_status (one row per token: its state, counts, teams, records
 * that could not be applied, and attention, what needs doing, in words;
 * never a secret), ade_team_status
 * (one row per team), and ade_notify_hosts(), which sends the
 * NOTIFY ade_hosts payloads of the page apply (sync.sql) and of the
 * host-delete trigger (hosts.sql), each under PostgreSQL's 8000-byte limit.
 * ade_reader may read both views.
 *
 * View bodies are parsed with the search_path of CREATE EXTENSION, and
 * run with the privileges of whoever reads them for the functions they
 * call: every function and operator in them is written pg_catalog.f /
 * OPERATOR(pg_catalog.x) (a look-alike created in the schema beforehand
 * would otherwise be bound, and run as every reader), and the functions
 * of the extension's they call (ade_secret_status(), ade_node_problem(),
 * ade_job_problem() ...) are granted to ade_reader.
 *
 * IDENTIFICATION
 *	  src/schema/status.sql
 *
 *-------------------------------------------------------------------------
 */

-- NOTIFY ade_hosts with {"event": ..., "hosts": [{"id", "serial", "token_id"}, ...]},
-- one notification per event per ~7000 bytes of hosts (PostgreSQL's limit
-- is 8000); serials are cut to 100 characters in the payload.
CREATE FUNCTION ade_notify_hosts(p_events text[], p_ids bigint[], p_serials text[],
	p_tokens bigint[]) RETURNS int
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	WITH items AS (
		SELECT x.event, x.n,
			   json_build_object('id', x.id, 'serial', left(x.serial, 100), 'token_id', x.token)::text AS item
		  FROM unnest(p_events, p_ids, p_serials, p_tokens) WITH ORDINALITY AS x(event, id, serial, token, n)
	), sized AS (
		SELECT i.*, sum(length(i.item) + 1) OVER (PARTITION BY i.event ORDER BY i.n) AS cum
		  FROM items i
	)
	SELECT count(*)::int FROM (
		SELECT pg_notify('ade_hosts',
						 format('{"event": %s, "hosts": [%s]}', to_json(s.event),
								string_agg(s.item, ',' ORDER BY s.n)))
		  FROM sized s
		 GROUP BY s.event, s.cum / 7000
	) sent
$$;
COMMENT ON FUNCTION ade_notify_hosts(text[], bigint[], text[], bigint[]) IS
	'internal: NOTIFY ade_hosts, batched under the 8000-byte payload limit';

-- What is wrong with the pg_cron job, in words, or NULL: its last run
-- failed (a setting of the database that breaks it, a role it runs as
-- that may not use ade, a timeout), so no run leaves a history row and
-- only cron.job_run_details says why (the job ade_schedule() made: its
-- command, not only its name).  For ade_status.attention, which
-- ade_reader reads: SECURITY DEFINER (pg_cron shows a role only its own
-- jobs' runs).
CREATE FUNCTION ade_job_problem() RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_status text;
	v_message text;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron')
	   OR to_regclass('cron.job_run_details') IS NULL THEN
		RETURN NULL;
	END IF;
	EXECUTE 'SELECT d.status, d.return_message FROM cron.job j JOIN cron.job_run_details d ON d.jobid = j.jobid
			  WHERE j.jobname = $1 AND j.database = current_database() AND d.status IN ($2, $3)
				AND j.command = $4 AND d.command = $4
			  ORDER BY d.start_time DESC NULLS LAST LIMIT 1'
		INTO v_status, v_message USING 'ade_sync', 'succeeded', 'failed', @extschema@.ade_job_command();
	IF v_status = 'failed' THEN
		RETURN format('the pg_cron job ade_sync fails: %s (cron.job_run_details)',
					  left(coalesce(v_message, 'no message'), 300));
	END IF;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_job_problem() IS
	'internal: why the last run of the pg_cron job ade_sync failed, or null';

REVOKE ALL ON FUNCTION ade_job_problem() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ade_job_problem() TO ade_reader;

-- Whether this server preloaded ade: only then is its WAL resource manager
-- registered (src/kekwal.c), whatever shared_preload_libraries spells.
CREATE FUNCTION ade_preloaded() RETURNS boolean
	AS 'MODULE_PATHNAME', 'ade_preloaded' LANGUAGE C STABLE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_preloaded() IS
	'internal: whether this server preloaded the ade library (shared_preload_libraries)';
REVOKE ALL ON FUNCTION ade_preloaded() FROM PUBLIC;

-- What this server lacks to run the sync, now or after a failover to it,
-- in words, or NULL: each node of a formation has its own settings (they
-- do not replicate), so each says so itself, a standby too, before a
-- failover needs it.  ade preloaded (the README's setting: a standby
-- replays ade's WAL records only with it); where pg_cron is installed in
-- this database, pg_cron preloaded and cron.database_name this database
-- (else the ade_sync job never runs here).  SECURITY DEFINER: both
-- settings are superuser-only, and ade_reader reads ade_status.  The
-- arguments are for testing other values; NULL is this server's (for ade,
-- whether the library registered its resource manager).
CREATE FUNCTION ade_node_problem(preload text DEFAULT NULL, cron_database text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_libs text[];
	v_ade boolean;
	v_cron_db text;
BEGIN
	-- the libraries as the server loads them: separated by commas, any
	-- white space and quotes aside, a directory and .so aside
	SELECT coalesce(array_agg(regexp_replace(regexp_replace(
				btrim(btrim(x, E' \t\n\r\f\v'), '"'), '^.*/', ''), '\.so$', '')), '{}')
	  INTO v_libs
	  FROM regexp_split_to_table(coalesce(preload, current_setting('shared_preload_libraries')), ',') x
	 WHERE btrim(x, E' \t\n\r\f\v') <> '';
	-- this server's: whether the library registered its resource manager
	v_ade := CASE WHEN preload IS NULL THEN @extschema@.ade_preloaded() ELSE 'ade' = ANY (v_libs) END;
	IF NOT v_ade THEN
		RETURN 'ade is not in shared_preload_libraries on this server: add it (beside pg_cron) and restart; '
			   'a standby replays ade''s WAL records only with it (README, Running it in production)';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
		RETURN NULL;
	END IF;
	IF NOT 'pg_cron' = ANY (v_libs) THEN
		RETURN 'pg_cron is not in shared_preload_libraries on this server: the ade_sync job does not run here '
			   '(nor after a failover to it); add it and restart';
	END IF;
	v_cron_db := coalesce(cron_database, current_setting('cron.database_name', true), 'postgres');
	IF v_cron_db <> current_database() THEN
		RETURN format('cron.database_name is %s on this server, not this database (%s): pg_cron runs the '
					  'ade_sync job only from its own database (nor after a failover to it); set it and restart',
					  quote_literal(v_cron_db), quote_literal(current_database()));
	END IF;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_node_problem(text, text) IS
	'what this server lacks to run the sync (ade or pg_cron not preloaded, cron.database_name), or null; arguments for testing, null = this server''s';
REVOKE ALL ON FUNCTION ade_node_problem(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ade_node_problem(text, text) TO ade_reader;

-- One row per token, no secret.  ade_reader reads it (SELECT *): every
-- function of the extension's it calls is granted to ade_reader.
CREATE VIEW ade_status AS
SELECT t.id AS token_id,
	   t.org_name,
	   t.apple_id,
	   t.server_name,
	   t.mode,
	   t.last_sync_at,
	   pg_catalog.now() OPERATOR(pg_catalog.-) t.last_sync_at AS last_sync_age,
	   t.last_error,
	   t.terms_expired,
	   t.token_invalid,
	   t.renew_at,
	   (t.renew_at OPERATOR(pg_catalog.<) pg_catalog.now()) AS token_expired,
	   pg_catalog.floor(pg_catalog.date_part('epoch',
			t.renew_at OPERATOR(pg_catalog.-) pg_catalog.now())
			OPERATOR(pg_catalog./) 86400)::int AS days_until_expiry,
	   t.assign_profiles,
	   coalesce(a.live, 0) AS devices_live,
	   coalesce(a.soft_deleted, 0) AS devices_deleted,
	   coalesce(a.darwin, 0) AS darwin,
	   coalesce(a.ios, 0) AS ios,
	   coalesce(a.ipados, 0) AS ipados,
	   coalesce(a.tvos, 0) AS tvos,
	   coalesce(a.visionos, 0) AS visionos,
	   coalesce(a.assigned, 0) AS assigned,
	   coalesce(a.pending, 0) AS pending,
	   coalesce(a.failed, 0) AS failed,
	   coalesce(a.throttled, 0) AS throttled,
	   coalesce(a.not_accessible, 0) AS not_accessible,
	   t.renew_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.+) interval '30 days') AS expires_within_30_days,
	   CASE
		 WHEN k.problem IS NOT NULL THEN k.problem
		 WHEN t.token_invalid THEN 'Apple rejects the token: download a new one from ABM and call ade_add_token()'
		 WHEN t.terms_expired THEN 'terms not accepted: an ABM administrator must sign in and accept them'
		 WHEN t.renew_at OPERATOR(pg_catalog.<) pg_catalog.now() THEN 'the token has expired: renew it in ABM and call ade_add_token()'
		 WHEN pz.paused IS NOT NULL
		   THEN 'ABM asked to wait (429/503 Retry-After), nothing of these kinds is sent until then: '
				OPERATOR(pg_catalog.||) pz.said
		 WHEN k.node IS NOT NULL THEN k.node
		 WHEN t.last_error IS NOT NULL THEN 'the last sync failed: ' OPERATOR(pg_catalog.||) t.last_error
		 WHEN @extschema@.ade_job_problem() IS NOT NULL THEN @extschema@.ade_job_problem()
		 WHEN @extschema@.ade_profile_problem(t.id) IS NOT NULL THEN @extschema@.ade_profile_problem(t.id)
		 WHEN t.last_sync_at IS NULL THEN 'never synced: run SELECT * FROM ade_sync() or ade_schedule()'
		 WHEN t.last_sync_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) interval '10 minutes')
		   THEN 'no sync for 10 minutes: is the pg_cron job (ade_schedule()) running?'
		 WHEN t.renew_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.+) interval '30 days')
		   THEN 'the token expires within 30 days: renew it in ABM and call ade_add_token()'
		 WHEN r.rejected OPERATOR(pg_catalog.>) 0
		   THEN pg_catalog.format('%s device records from ABM could not be applied: see ade_rejected_records (reason), fix the cause; they are tried again', r.rejected)
		 WHEN coalesce(a.pending, 0) OPERATOR(pg_catalog.>) 0
			  AND NOT EXISTS (SELECT 1 FROM @extschema@.ade_profiles x
							   WHERE x.token_id OPERATOR(pg_catalog.=) t.id OR x.token_id IS NULL)
			  AND coalesce(pg_catalog.current_setting('ade.enroll_url', true), '') OPERATOR(pg_catalog.=) ''
		   THEN 'no enrollment profile: set ade.enroll_url or call ade_set_profile()'
		 ELSE 'ok'
	   END AS attention,
	   (SELECT pg_catalog.jsonb_object_agg(coalesce(tm.name, '(no team)'), c.n)
		  FROM (SELECT h.team_id, pg_catalog.count(*) AS n
				  FROM @extschema@.host_dep_assignments d
				  JOIN @extschema@.hosts h ON h.id OPERATOR(pg_catalog.=) d.host_id
				 WHERE d.abm_token_id OPERATOR(pg_catalog.=) t.id AND d.deleted_at IS NULL
				 GROUP BY h.team_id) c
		  LEFT JOIN @extschema@.teams tm ON tm.id OPERATOR(pg_catalog.=) c.team_id) AS teams,
	   r.rejected,
	   pz.paused,
	   coalesce(a.migration_due_7_days, 0) AS migration_due_7_days,
	   coalesce(a.held, 0) AS held,
	   coalesce(a.reconciled, 0) AS devices_reconciled,
	   t.reconciled_at,
	   CASE WHEN t.reconcile_started_at IS NOT NULL THEN 'under way since ' OPERATOR(pg_catalog.||) t.reconcile_started_at::text
			WHEN t.reconcile_due THEN 'asked for: the next run starts it'
	   END AS reconcile,
	   NULL::bigint AS api_account_id,
	   NULL::timestamptz AS inventory_at,
	   NULL::bigint AS org_devices,
	   NULL::bigint AS org_devices_unassigned
  FROM @extschema@.abm_tokens t
  LEFT JOIN LATERAL (
	SELECT pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL) AS live,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NOT NULL) AS soft_deleted,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL AND h.platform OPERATOR(pg_catalog.=) 'darwin') AS darwin,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL AND h.platform OPERATOR(pg_catalog.=) 'ios') AS ios,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL AND h.platform OPERATOR(pg_catalog.=) 'ipados') AS ipados,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL AND h.platform OPERATOR(pg_catalog.=) 'tvos') AS tvos,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL AND h.platform OPERATOR(pg_catalog.=) 'visionos') AS visionos,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL AND d.assign_profile_response OPERATOR(pg_catalog.=) 'SUCCESS') AS assigned,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL AND d.needs_assign) AS pending,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL AND d.assign_profile_response OPERATOR(pg_catalog.=) 'FAILED') AS failed,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL AND d.assign_profile_response OPERATOR(pg_catalog.=) 'THROTTLED') AS throttled,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL AND d.assign_profile_response OPERATOR(pg_catalog.=) 'NOT_ACCESSIBLE') AS not_accessible,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL
				AND d.mdm_migration_deadline OPERATOR(pg_catalog.>=) pg_catalog.now()
				AND d.mdm_migration_deadline OPERATOR(pg_catalog.<=) (pg_catalog.now() OPERATOR(pg_catalog.+) interval '7 days')) AS migration_due_7_days,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL AND EXISTS (
				SELECT 1 FROM @extschema@.ade_device_pins y
				 WHERE y.hardware_serial OPERATOR(pg_catalog.=) d.hardware_serial AND y.profile IS NULL)) AS held,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_reason OPERATOR(pg_catalog.=) 'reconciled') AS reconciled
	  FROM @extschema@.host_dep_assignments d
	  LEFT JOIN @extschema@.hosts h ON h.id OPERATOR(pg_catalog.=) d.host_id
	 WHERE d.abm_token_id OPERATOR(pg_catalog.=) t.id
  ) a ON true
  CROSS JOIN LATERAL (
	SELECT pg_catalog.count(*) AS rejected
	  FROM @extschema@.ade_rejected_records x
	 WHERE x.token_id OPERATOR(pg_catalog.=) t.id
  ) r
  CROSS JOIN (SELECT @extschema@.ade_secret_status() AS problem, @extschema@.ade_node_problem() AS node) k
  LEFT JOIN LATERAL (
	SELECT pg_catalog.jsonb_object_agg(z.request, z.paused_until ORDER BY z.request) AS paused,
		   pg_catalog.string_agg(z.request OPERATOR(pg_catalog.||) ' until ' OPERATOR(pg_catalog.||) z.paused_until::text,
								 ', ' ORDER BY z.request) AS said
	  FROM @extschema@.ade_rate_limits z
	 WHERE z.token_id OPERATOR(pg_catalog.=) t.id AND z.paused_until OPERATOR(pg_catalog.>) pg_catalog.now()
  ) pz ON true
UNION ALL
-- a line per Business/School Manager API account (api.sql): its inventory
SELECT NULL::bigint, NULL::text, NULL::text, NULL::text, 'api'::text,
	   a.inventory_at, pg_catalog.now() OPERATOR(pg_catalog.-) a.inventory_at,
	   a.last_error, NULL::boolean, NULL::boolean, NULL::timestamptz, NULL::boolean, NULL::int, NULL::boolean,
	   NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint,
	   NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::boolean,
	   CASE
		 WHEN k2.problem IS NOT NULL THEN k2.problem
		 WHEN a.not_before OPERATOR(pg_catalog.>) pg_catalog.now()
		   THEN 'ABM asked to wait (429/503 Retry-After): nothing is sent to this API account before ' OPERATOR(pg_catalog.||) a.not_before::text
		 WHEN a.last_error IS NOT NULL THEN 'the last inventory failed: ' OPERATOR(pg_catalog.||) a.last_error
		 WHEN a.inventory_at IS NULL AND a.inventory_started_at IS NOT NULL
		   THEN 'the first inventory is under way (since ' OPERATOR(pg_catalog.||) a.inventory_started_at::text OPERATOR(pg_catalog.||) ')'
		 WHEN a.inventory_at IS NULL
		   THEN 'no inventory yet: SELECT * FROM ade_inventory_sync(), or the next ade_sync() (ade.inventory_interval)'
		 WHEN c.unassigned OPERATOR(pg_catalog.>) 0
		   THEN pg_catalog.format('%s devices of the organisation are on no MDM server: SELECT * FROM ade_devices WHERE mdm_server_id IS NULL AND released_at IS NULL', c.unassigned)
		 ELSE 'ok'
	   END,
	   NULL::jsonb, NULL::bigint,
	   CASE WHEN a.not_before OPERATOR(pg_catalog.>) pg_catalog.now() THEN pg_catalog.jsonb_build_object('api', a.not_before) END,
	   NULL::bigint, NULL::bigint, NULL::bigint, NULL::timestamptz,
	   CASE WHEN a.inventory_started_at IS NOT NULL THEN 'inventory under way since ' OPERATOR(pg_catalog.||) a.inventory_started_at::text END,
	   a.id, a.inventory_at, c.devices, c.unassigned
  FROM @extschema@.abm_api_accounts a
  CROSS JOIN (SELECT @extschema@.ade_secret_status() AS problem) k2
  CROSS JOIN LATERAL (
	SELECT pg_catalog.count(*) FILTER (WHERE o.released_at IS NULL) AS devices,
		   pg_catalog.count(*) FILTER (WHERE o.released_at IS NULL AND o.mdm_server_id IS NULL) AS unassigned
	  FROM @extschema@.abm_org_devices o
	 WHERE o.account_id OPERATOR(pg_catalog.=) a.id
  ) c;
COMMENT ON VIEW ade_status IS 'one row per ABM token: its state and device counts, and one per Business/School Manager API account (mode api); no secret';

-- One row per problem, for alerting (README, Monitoring): what
-- ade_status.attention says first, and everything else that is wrong at the
-- same time, each with a stable code.  A pg_cron run that "succeeded" only
-- says the job's command ran to its end: a token whose requests to ABM
-- failed is a row here (last_run_failed) and in ade_sync_runs.  No row: all
-- is well.  ade_reader may call it: SECURITY DEFINER, as it asks which
-- waiting devices no profile scope covers (ade_unassignable(), which
-- reads the profiles); it returns counts and words, never a secret.
CREATE FUNCTION ade_problems(stale_after interval DEFAULT '10 minutes',
	OUT token_id bigint, OUT org_name text, OUT problem text, OUT since timestamptz, OUT detail text)
RETURNS SETOF record
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	WITH s AS (
		SELECT x.*, ok.last_ok, f.failing_since
		  FROM @extschema@.ade_status x
		  LEFT JOIN LATERAL (
			SELECT max(u.started_at) AS last_ok FROM @extschema@.ade_sync_runs u
			 WHERE u.token_id = x.token_id AND u.error IS NULL) ok ON true
		  LEFT JOIN LATERAL (
			SELECT min(u.started_at) AS failing_since FROM @extschema@.ade_sync_runs u
			 WHERE u.token_id = x.token_id AND u.error IS NOT NULL AND u.error <> 'busy'
			   AND u.started_at > coalesce(ok.last_ok, '-infinity')) f ON true
		 WHERE x.token_id IS NOT NULL
	)
	SELECT NULL::bigint, NULL::text, 'key_file', NULL::timestamptz, k.problem
	  FROM (SELECT @extschema@.ade_secret_status() AS problem) k WHERE k.problem IS NOT NULL
	UNION ALL
	SELECT NULL, NULL, 'node_setup', NULL, n.problem
	  FROM (SELECT @extschema@.ade_node_problem() AS problem) n WHERE n.problem IS NOT NULL
	UNION ALL
	SELECT NULL, NULL, 'job_failing', NULL, j.problem
	  FROM (SELECT @extschema@.ade_job_problem() AS problem) j WHERE j.problem IS NOT NULL
	UNION ALL
	SELECT s.token_id, s.org_name, 'token_invalid', NULL,
		   'Apple rejects the token: download a new one from ABM and call ade_add_token()'
	  FROM s WHERE s.token_invalid
	UNION ALL
	SELECT s.token_id, s.org_name, 'terms_not_accepted', NULL,
		   'terms not accepted: an ABM administrator must sign in and accept them'
	  FROM s WHERE s.terms_expired
	UNION ALL
	SELECT s.token_id, s.org_name, 'token_expired', s.renew_at,
		   'the token has expired: renew it in ABM and call ade_add_token()'
	  FROM s WHERE s.token_expired
	UNION ALL
	SELECT s.token_id, s.org_name, 'token_expiring', s.renew_at - interval '30 days',
		   format('the token expires on %s: renew it in ABM and call ade_add_token()', s.renew_at::date)
	  FROM s WHERE s.expires_within_30_days AND NOT s.token_expired
	UNION ALL
	SELECT s.token_id, s.org_name, 'last_run_failed', s.failing_since, s.last_error
	  FROM s WHERE s.last_error IS NOT NULL
	UNION ALL
	SELECT s.token_id, s.org_name, 'rate_limited', z.asked_at,
		   format('ABM answered a %s request with HTTP %s and Retry-After %s s: none is sent until %s',
				  z.request, z.status, z.retry_after, z.paused_until)
	  FROM s JOIN @extschema@.ade_rate_limits z ON z.token_id = s.token_id
	 WHERE z.paused_until > now()
	UNION ALL
	SELECT s.token_id, s.org_name, 'never_synced', NULL,
		   'never synced: run SELECT * FROM ade_sync() or ade_schedule()'
	  FROM s WHERE s.last_sync_at IS NULL
	UNION ALL
	SELECT s.token_id, s.org_name, 'no_successful_run', s.last_ok,
		   CASE WHEN s.last_ok IS NULL THEN format('no run has succeeded (none in ade_sync_runs for %s)', stale_after)
				ELSE format('no run has succeeded for %s (the last one at %s)', stale_after, s.last_ok) END
	  FROM s
	 WHERE s.last_sync_at IS NOT NULL
	   AND coalesce(s.last_ok, '-infinity') < now() - stale_after
	UNION ALL
	SELECT s.token_id, s.org_name, 'profile_refused', NULL, p.problem
	  FROM s CROSS JOIN LATERAL (SELECT @extschema@.ade_profile_problem(s.token_id) AS problem) p
	 WHERE p.problem IS NOT NULL
	UNION ALL
	SELECT s.token_id, s.org_name, 'records_rejected', NULL,
		   format('%s device records from ABM could not be applied: see ade_rejected_records (reason)', s.rejected)
	  FROM s WHERE s.rejected > 0
	UNION ALL
	SELECT s.token_id, s.org_name, 'no_profile', NULL,
		   format('%s devices wait for a profile none of the scopes gives them: set ade.enroll_url or call ade_set_profile()',
				  CASE WHEN u.n < 0 THEN s.pending ELSE u.n END)
	  FROM s CROSS JOIN LATERAL (SELECT @extschema@.ade_unassignable(s.token_id) AS n) u
	 WHERE s.pending > 0 AND s.assign_profiles AND u.n <> 0
	UNION ALL
	-- the API accounts (token_id null; org_name: the client id)
	SELECT NULL, a.client_id, 'api_inventory_failed', a.last_error_at, a.last_error
	  FROM @extschema@.abm_api_accounts a
	 WHERE a.last_error IS NOT NULL AND coalesce(a.not_before <= now(), true)
	UNION ALL
	SELECT NULL, a.client_id, 'api_rate_limited', a.last_error_at,
		   format('ABM asked to wait: nothing is sent to this API account before %s', a.not_before)
	  FROM @extschema@.abm_api_accounts a WHERE a.not_before > now()
	UNION ALL
	SELECT NULL, x.client_id, 'devices_on_no_server', x.inventory_at,
		   format('%s devices of the organisation are on no MDM server (ade_devices)', x.org_devices_unassigned)
	  FROM (SELECT st.org_devices_unassigned, st.inventory_at, a.client_id
			  FROM @extschema@.ade_status st JOIN @extschema@.abm_api_accounts a ON a.id = st.api_account_id) x
	 WHERE x.org_devices_unassigned > 0
$$;
COMMENT ON FUNCTION ade_problems(interval) IS
	'one row per problem (a stable code, the token, since when, in words), for alerting; none when all is well';
REVOKE ALL ON FUNCTION ade_problems(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ade_problems(interval) TO ade_reader;

-- Hosts per team, and what each team's devices get.
CREATE VIEW ade_team_status AS
SELECT tm.id AS team_id,
	   tm.name,
	   (SELECT pg_catalog.count(*) FROM @extschema@.hosts h WHERE h.team_id OPERATOR(pg_catalog.=) tm.id) AS hosts,
	   (SELECT pg_catalog.count(*) FROM @extschema@.hosts h JOIN @extschema@.host_dep_assignments d
			ON d.host_id OPERATOR(pg_catalog.=) h.id AND d.deleted_at IS NULL
		 WHERE h.team_id OPERATOR(pg_catalog.=) tm.id) AS ade_live,
	   (SELECT pg_catalog.jsonb_object_agg(c.platform, c.n) FROM (
			SELECT h.platform, pg_catalog.count(*) AS n FROM @extschema@.hosts h
			 WHERE h.team_id OPERATOR(pg_catalog.=) tm.id GROUP BY h.platform) c) AS by_platform,
	   (SELECT x.profile OPERATOR(pg_catalog.->>) 'profile_name' FROM @extschema@.ade_profiles x
		 WHERE x.team_id OPERATOR(pg_catalog.=) tm.id) AS profile_name
  FROM @extschema@.teams tm;
COMMENT ON VIEW ade_team_status IS 'one row per team: its hosts, its live ADE devices, by platform, and its profile';

REVOKE ALL ON ade_status, ade_team_status FROM PUBLIC;
GRANT SELECT ON ade_status, ade_team_status TO ade_reader;
REVOKE ALL ON FUNCTION ade_notify_hosts(text[], bigint[], text[], bigint[]) FROM PUBLIC;
