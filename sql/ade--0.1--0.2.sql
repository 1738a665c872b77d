/*-------------------------------------------------------------------------
 *
 * ade--0.1--0.2.sql
 *		Upgrade of the ade extension from 0.1 to 0.2: what an MDM admin and a
 *		DBA look at.
 *
 * - NOTIFY ade_hosts: a small JSON payload when the sync adds, moves or
 *   soft-deletes a host, or the host-delete trigger restores one; batched
 *   per page, each payload under 8000 bytes (ade_notify_hosts()).  A full
 *   fetch is announced once per run ("fetched", with its count; sent by the
 *   library) instead of host by host, so that a fetch of any size holds
 *   little in memory.
 * - ade_status gains expires_within_30_days and attention (what to do).
 * - ade_last_runs(n): the last n runs, for ade_reader too.
 *
 * Never edit this file once released.
 *
 *-------------------------------------------------------------------------
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION ade UPDATE TO '0.2'" to load this file. \quit

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

CREATE OR REPLACE FUNCTION ade_apply_page(p_token bigint, p_devices jsonb, p_fetch boolean,
	p_cursor text, p_mode text, p_fetched_until text,
	OUT added int, OUT modified int, OUT deleted int, OUT skipped int)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
-- a generic plan made while the tables were empty would scan them whole on
-- every page of a large first fetch (quadratic); plan each page afresh
SET plan_cache_mode = force_custom_plan
AS $$
BEGIN
	IF coalesce(jsonb_array_length(p_devices), 0) = 0 THEN
		-- nothing new (the usual sync page): only the cursor moves
		UPDATE @extschema@.abm_tokens t
		   SET cursor = p_cursor, mode = p_mode,
			   fetch_started_at = CASE WHEN p_mode = 'fetch' AND p_cursor IS NULL
									   THEN now() ELSE t.fetch_started_at END,
			   fetched_until = coalesce(p_fetched_until::timestamptz, t.fetched_until),
			   updated_at = now()
		 WHERE t.id = p_token;
		added := 0; modified := 0; deleted := 0; skipped := 0;
		RETURN;
	END IF;
	WITH recs AS (
		-- no WHERE here: a filter would make the planner expect one row per
		-- page, and choose plans that scan whole tables per record
		SELECT e.rec, e.ord,
			   CASE WHEN jsonb_typeof(e.rec) = 'object'
					THEN nullif(e.rec->>'serial_number', '') END AS serial,
			   CASE WHEN p_fetch THEN 'added'
					ELSE coalesce(e.rec->>'op_type', 'modified') END AS op,
			   (e.rec->>'op_date')::timestamptz AS op_date
		  FROM jsonb_array_elements(coalesce(p_devices, '[]'::jsonb)) WITH ORDINALITY AS e(rec, ord)
	), win AS (				-- rule 4: one record per serial, the latest op_date
		SELECT DISTINCT ON (r.serial) r.*
		  FROM recs r
		 WHERE r.serial IS NOT NULL
		 ORDER BY r.serial, r.op_date DESC NULLS LAST, r.ord DESC
	), plan0 AS (
		SELECT w.serial, w.rec, w.op_date, h.id AS host_id,
			   coalesce(@extschema@.ade_platform(w.rec->>'device_family'), h.platform, 'darwin') AS platform,
			   coalesce(w.rec->>'model', h.hardware_model) AS model,
			   d.assign_profile_response AS response,
			   d.abm_token_id AS prev_token, d.host_id AS prev_host,
			   (d.hardware_serial IS NOT NULL AND d.deleted_at IS NULL) AS prev_live,
			   CASE
				 -- older than what was applied already: a page sent again,
				 -- or an old record of a token that no longer holds it
				 WHEN w.op_date < d.op_date THEN 'stale'
				 WHEN w.op = 'deleted' THEN 'deleted'
				 WHEN w.op <> 'added' AND d.deleted_at IS NULL
					  AND d.abm_token_id = p_token THEN 'modified'
				 ELSE 'added'	-- rule 6: an unknown serial is added
			   END AS act
		  FROM win w
		  -- LATERAL: one index probe per record, never a scan of the table
		  LEFT JOIN LATERAL (SELECT * FROM @extschema@.host_dep_assignments x
							  WHERE x.hardware_serial = w.serial) d ON true
		  LEFT JOIN LATERAL (SELECT * FROM @extschema@.hosts y
							  WHERE y.hardware_serial = w.serial) h ON true
	), plan AS (
		-- rules 5, 6 and 10: does the device need our profile?
		SELECT p.*, e.profile_uuid AS ours,
			   coalesce(p.rec->>'profile_uuid' = e.profile_uuid
						AND p.rec->>'profile_status' IN ('assigned', 'pushed'), false) AS has_ours,
			   CASE
				 WHEN p.act = 'added' THEN
					NOT coalesce(p.rec->>'profile_uuid' = e.profile_uuid
								 AND p.rec->>'profile_status' IN ('assigned', 'pushed'), false)
				 -- NOT_ACCESSIBLE waits until ABM shows a profile that is not ours
				 WHEN p.response = 'NOT_ACCESSIBLE' THEN
					coalesce(p.rec->>'profile_uuid', '') <> ''
					AND p.rec->>'profile_uuid' IS DISTINCT FROM e.profile_uuid
				 -- our own assignment echoed back as modified is not sent again
				 ELSE p.rec->>'profile_uuid' IS DISTINCT FROM e.profile_uuid
					  OR coalesce(p.rec->>'profile_status', 'empty') IN ('removed', 'empty')
			   END AS needs
		  FROM plan0 p
		  LEFT JOIN @extschema@.ade_effective_profiles(p_token) e ON e.platform = p.platform
	), up_hosts AS (
		INSERT INTO @extschema@.hosts AS h (hardware_serial, hardware_model, platform)
		SELECT p.serial, p.model, p.platform
		  FROM plan p
		 WHERE p.act IN ('added', 'modified')
		 ORDER BY p.serial
		ON CONFLICT (hardware_serial) DO UPDATE
		   SET hardware_model = excluded.hardware_model,
			   platform = excluded.platform,
			   updated_at = now()
		 WHERE h.hardware_model IS DISTINCT FROM excluded.hardware_model
			OR h.platform IS DISTINCT FROM excluded.platform
		RETURNING h.id, h.hardware_serial
	), up_asg AS (				-- rules 5 and 6
		INSERT INTO @extschema@.host_dep_assignments AS d
			(host_id, hardware_serial, abm_token_id, added_at, device, op_date,
			 needs_assign, profile_uuid, assign_profile_response, retry_at, updated_at)
		SELECT coalesce(u.id, p.host_id), p.serial, p_token, now(), p.rec, p.op_date,
			   p.needs, CASE WHEN p.has_ours THEN p.ours END,
			   CASE WHEN p.has_ours THEN 'SUCCESS' END,
			   -- a marker for DO UPDATE (a new row is never 'modified')
			   CASE WHEN p.act = 'modified' THEN 'infinity'::timestamptz END, now()
		  FROM plan p
		  LEFT JOIN up_hosts u ON u.hardware_serial = p.serial
		 WHERE p.act IN ('added', 'modified')
		 ORDER BY p.serial
		ON CONFLICT (hardware_serial) DO UPDATE
		   SET host_id = excluded.host_id,
			   added_at = CASE WHEN d.deleted_at IS NOT NULL
								 OR d.abm_token_id <> excluded.abm_token_id
							   THEN now() ELSE d.added_at END,
			   abm_token_id = excluded.abm_token_id,
			   deleted_at = NULL,
			   device = excluded.device,
			   op_date = coalesce(excluded.op_date, d.op_date),
			   needs_assign = excluded.needs_assign,
			   -- reported again as added: any cooldown ends
			   -- reported (again) as added: any cooldown ends; modified keeps it
			   retry_at = CASE WHEN excluded.retry_at = 'infinity' THEN d.retry_at END,
			   profile_uuid = coalesce(excluded.profile_uuid, d.profile_uuid),
			   assign_profile_response = coalesce(excluded.assign_profile_response, d.assign_profile_response),
			   updated_at = now()
		RETURNING 1
	), del AS (					-- rule 7: only the token that holds it
		UPDATE @extschema@.host_dep_assignments d
		   SET deleted_at = now(), needs_assign = false,
			   op_date = coalesce(p.op_date, d.op_date), updated_at = now()
		  FROM plan p
		 WHERE p.act = 'deleted' AND d.hardware_serial = p.serial
		   AND d.abm_token_id = p_token AND d.deleted_at IS NULL
		RETURNING 1
	), ev AS (					-- what LISTEN ade_hosts hears of this page
		SELECT p.event, coalesce(u.id, p.host_id, p.prev_host) AS id, p.serial
		  FROM (SELECT q.*,
					   CASE
						 WHEN q.act = 'added' AND NOT q.prev_live THEN 'added'
						 WHEN q.act = 'added' AND q.prev_token <> p_token THEN 'moved'
						 WHEN q.act = 'deleted' AND q.prev_live AND q.prev_token = p_token THEN 'deleted'
					   END AS event
				  FROM plan q) p
		  LEFT JOIN up_hosts u ON u.hardware_serial = p.serial
		 WHERE p.event IS NOT NULL AND NOT p_fetch
	), tok AS (
		UPDATE @extschema@.abm_tokens t
		   SET cursor = p_cursor,
			   mode = p_mode,
			   fetch_started_at = CASE WHEN p_mode = 'fetch' AND p_cursor IS NULL
									   THEN now() ELSE t.fetch_started_at END,
			   fetched_until = coalesce(p_fetched_until::timestamptz, t.fetched_until),
			   updated_at = now()
		 WHERE t.id = p_token
		RETURNING 1
	)
	SELECT (SELECT count(*) FROM plan p WHERE p.act = 'added'),
		   (SELECT count(*) FROM plan p WHERE p.act = 'modified'),
		   (SELECT count(*) FROM del),
		   (SELECT count(*) FROM recs r WHERE r.serial IS NULL)
			 + (SELECT count(*) FROM up_asg) * 0 + (SELECT count(*) FROM tok) * 0
			 -- a full fetch announces itself once, at the end of the run (src/sync.c):
			 -- payloads of a million hosts would wait in memory until it commits
			 + (SELECT @extschema@.ade_notify_hosts(array_agg(e.event), array_agg(e.id),
												 array_agg(e.serial), array_agg(p_token))
				  FROM ev e) * 0
	  INTO added, modified, deleted, skipped;
END
$$;

CREATE OR REPLACE FUNCTION ade_hosts_after_delete() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n int;
BEGIN
	WITH restored AS (
		INSERT INTO @extschema@.hosts (id, hardware_serial, hardware_model, platform,
									   created_at, updated_at)
		SELECT o.id, d.hardware_serial,
			   coalesce(d.device->>'model', o.hardware_model),
			   coalesce(@extschema@.ade_platform(d.device->>'device_family'), o.platform),
			   now(), now()
		  FROM ade_deleted_hosts o
		  JOIN @extschema@.host_dep_assignments d
			ON d.host_id = o.id AND d.deleted_at IS NULL
		 ORDER BY o.id
		RETURNING id, hardware_serial
	)
	SELECT @extschema@.ade_notify_hosts(array_agg('restored'::text), array_agg(r.id),
										array_agg(r.hardware_serial), array_agg(d.abm_token_id))
	  INTO n
	  FROM restored r JOIN @extschema@.host_dep_assignments d ON d.host_id = r.id;
	RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION ade_hosts_after_truncate() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n int;
BEGIN
	WITH restored AS (
		INSERT INTO @extschema@.hosts (id, hardware_serial, hardware_model, platform)
		SELECT d.host_id, d.hardware_serial, d.device->>'model',
			   coalesce(@extschema@.ade_platform(d.device->>'device_family'), 'darwin')
		  FROM @extschema@.host_dep_assignments d
		 WHERE d.deleted_at IS NULL
		 ORDER BY d.host_id
		RETURNING id, hardware_serial
	)
	SELECT @extschema@.ade_notify_hosts(array_agg('restored'::text), array_agg(r.id),
										array_agg(r.hardware_serial), array_agg(d.abm_token_id))
	  INTO n
	  FROM restored r JOIN @extschema@.host_dep_assignments d ON d.host_id = r.id;
	RETURN NULL;
END
$$;

CREATE OR REPLACE VIEW ade_status AS
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
		 WHEN t.token_invalid THEN 'Apple rejects the token: download a new one from ABM and call ade_add_token()'
		 WHEN t.terms_expired THEN 'terms not accepted: an ABM administrator must sign in and accept them'
		 WHEN t.renew_at OPERATOR(pg_catalog.<) pg_catalog.now() THEN 'the token has expired: renew it in ABM and call ade_add_token()'
		 WHEN t.last_error IS NOT NULL THEN 'the last sync failed: ' OPERATOR(pg_catalog.||) t.last_error
		 WHEN t.last_sync_at IS NULL THEN 'never synced: run SELECT * FROM ade_sync() or ade_schedule()'
		 WHEN t.last_sync_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) interval '10 minutes')
		   THEN 'no sync for 10 minutes: is the pg_cron job (ade_schedule()) running?'
		 WHEN t.renew_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.+) interval '30 days')
		   THEN 'the token expires within 30 days: renew it in ABM and call ade_add_token()'
		 WHEN coalesce(a.pending, 0) OPERATOR(pg_catalog.>) 0 AND NOT EXISTS (
				SELECT 1 FROM @extschema@.ade_effective_profiles(t.id) e WHERE e.profile IS NOT NULL)
		   THEN 'no enrollment profile: set ade.enroll_url or call ade_set_profile()'
		 ELSE 'ok'
	   END AS attention
  FROM @extschema@.abm_tokens t
  LEFT JOIN LATERAL (
	SELECT count(*) FILTER (WHERE d.deleted_at IS NULL) AS live,
		   count(*) FILTER (WHERE d.deleted_at IS NOT NULL) AS soft_deleted,
		   count(*) FILTER (WHERE d.deleted_at IS NULL AND h.platform OPERATOR(pg_catalog.=) 'darwin') AS darwin,
		   count(*) FILTER (WHERE d.deleted_at IS NULL AND h.platform OPERATOR(pg_catalog.=) 'ios') AS ios,
		   count(*) FILTER (WHERE d.deleted_at IS NULL AND h.platform OPERATOR(pg_catalog.=) 'ipados') AS ipados,
		   count(*) FILTER (WHERE d.deleted_at IS NULL AND h.platform OPERATOR(pg_catalog.=) 'tvos') AS tvos,
		   count(*) FILTER (WHERE d.deleted_at IS NULL AND h.platform OPERATOR(pg_catalog.=) 'visionos') AS visionos,
		   count(*) FILTER (WHERE d.deleted_at IS NULL AND d.assign_profile_response OPERATOR(pg_catalog.=) 'SUCCESS') AS assigned,
		   count(*) FILTER (WHERE d.deleted_at IS NULL AND d.needs_assign) AS pending,
		   count(*) FILTER (WHERE d.deleted_at IS NULL AND d.assign_profile_response OPERATOR(pg_catalog.=) 'FAILED') AS failed,
		   count(*) FILTER (WHERE d.deleted_at IS NULL AND d.assign_profile_response OPERATOR(pg_catalog.=) 'THROTTLED') AS throttled,
		   count(*) FILTER (WHERE d.deleted_at IS NULL AND d.assign_profile_response OPERATOR(pg_catalog.=) 'NOT_ACCESSIBLE') AS not_accessible
	  FROM @extschema@.host_dep_assignments d
	  LEFT JOIN @extschema@.hosts h ON h.id OPERATOR(pg_catalog.=) d.host_id
	 WHERE d.abm_token_id OPERATOR(pg_catalog.=) t.id
  ) a ON true;


-- The last n runs, newest first (ade_reader may call it).
CREATE FUNCTION ade_last_runs(n int DEFAULT 10) RETURNS SETOF ade_sync_runs
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT * FROM @extschema@.ade_sync_runs r ORDER BY r.id DESC LIMIT n
$$;
COMMENT ON FUNCTION ade_last_runs(int) IS 'the last n ade_sync() runs (one row per token per run), newest first';

REVOKE ALL ON FUNCTION ade_notify_hosts(text[], bigint[], text[], bigint[]), ade_last_runs(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ade_last_runs(int) TO ade_reader;
