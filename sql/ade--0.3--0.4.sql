/*-------------------------------------------------------------------------
 *
 * ade--0.3--0.4.sql
 *		Upgrade of the ade extension from 0.3 to 0.4 (in development).
 *
 * 0.4 is the first version whose install script is built from the SQL
 * sources by concern (the files of src/schema/); this script brings a 0.3
 * installation to exactly what a fresh install of 0.4 creates, which the
 * test test/t/06_install_equals_upgrade.sql proves.  Every schema change of
 * 0.4 goes into the sources and into this script.
 *
 * Never edit this file once released.
 *
 *-------------------------------------------------------------------------
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION ade UPDATE TO '0.4'" to load this file. \quit

-- ---------------------------------------------------------------------
-- The sync, the assignment and the host triggers under any sequence of
-- events (issue 12)
-- ---------------------------------------------------------------------

-- what a device was last sent, so that a batch without an answer goes to
-- the back of the queue
ALTER TABLE host_dep_assignments ADD COLUMN assign_sent_at timestamptz;

-- ABM's Retry-After for the assignment of a whole token
ALTER TABLE abm_tokens ADD COLUMN assign_not_before timestamptz;
ALTER TABLE abm_tokens ADD COLUMN restored_at timestamptz;

-- the scopes of a profile are now (team, platform); what was kept per
-- platform or team is recomputed by the next run, which marks only the
-- devices that do not hold their profile
ALTER TABLE ade_profile_applied RENAME COLUMN platform TO scope;
DELETE FROM ade_profile_applied;
COMMENT ON TABLE ade_profile_applied IS 'internal: the profile that applied to each token and scope (team and platform) at its last run';

CREATE TABLE ade_rejected_records (
	id				bigserial PRIMARY KEY,
	token_id		bigint NOT NULL,
	hardware_serial text,
	record			jsonb NOT NULL,
	from_fetch		boolean NOT NULL,
	fetched_until	timestamptz,
	op_date			timestamptz,
	reason			text NOT NULL,
	sqlstate		text,
	rejected_at		timestamptz NOT NULL DEFAULT now(),
	tries			int NOT NULL DEFAULT 1,
	retry_at		timestamptz
);
CREATE UNIQUE INDEX ade_rejected_records_key ON ade_rejected_records
	(token_id, (hardware_serial IS NULL), md5(coalesce(hardware_serial, record::text)));
CREATE INDEX ade_rejected_records_serial_idx ON ade_rejected_records USING hash (hardware_serial);
CREATE INDEX ade_rejected_records_due_idx ON ade_rejected_records (token_id, retry_at);
COMMENT ON TABLE ade_rejected_records IS 'device records from ABM that could not be applied, with the reason; tried again by later runs';
SELECT pg_catalog.pg_extension_config_dump('ade_rejected_records', '');
SELECT pg_catalog.pg_extension_config_dump('ade_rejected_records_id_seq', '');

CREATE TABLE ade_tied_records (
	hardware_serial text NOT NULL,
	token_id		bigint NOT NULL REFERENCES abm_tokens (id) ON DELETE CASCADE,
	record			jsonb NOT NULL,
	from_fetch		boolean NOT NULL,
	op_date			timestamptz NOT NULL,
	PRIMARY KEY (hardware_serial, token_id)
);
COMMENT ON TABLE ade_tied_records IS 'internal: records of a device another token holds, of the same second as its last record; they apply when it lets go';
SELECT pg_catalog.pg_extension_config_dump('ade_tied_records', '');

CREATE UNLOGGED TABLE ade_truncated_hosts (
	id				bigint PRIMARY KEY,
	hardware_model	text,
	platform		text,
	team_id			bigint
);
COMMENT ON TABLE ade_truncated_hosts IS 'internal: hosts taken away by a TRUNCATE, for the trigger that makes the live ones again';
REVOKE ALL ON ade_rejected_records, ade_tied_records, ade_truncated_hosts FROM PUBLIC;
GRANT SELECT ON ade_rejected_records TO ade_reader;

-- one function decides which profile a device gets
CREATE FUNCTION ade_device_profiles(p_token bigint)
RETURNS TABLE (team_id bigint, platform text, profile jsonb, profile_key text, profile_uuid text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
ROWS 50
AS $$
BEGIN
	RETURN QUERY
	WITH plat(platform) AS (
		VALUES ('darwin'), ('ios'), ('ipados'), ('tvos'), ('visionos')
	), chain AS (
		-- most specific first: (token, platform), token, platform, the
		-- organisation default, then the built-in default
		SELECT p.platform, coalesce(x.profile,
			CASE WHEN coalesce(current_setting('ade.enroll_url', true), '') <> '' THEN
				jsonb_build_object('profile_name', 'Automatic enrollment',
								   'url', current_setting('ade.enroll_url'),
								   'is_supervised', true,
								   'is_mdm_removable', false,
								   'await_device_configured', true)
			END) AS profile
		  FROM plat p
		  LEFT JOIN LATERAL (
			SELECT y.profile FROM @extschema@.ade_profiles y
			 WHERE y.team_id IS NULL
			   AND (y.token_id = p_token OR y.token_id IS NULL)
			   AND (y.platform = p.platform OR y.platform IS NULL)
			 ORDER BY y.token_id IS NULL, y.platform IS NULL
			 LIMIT 1) x ON true
	), tm AS (
		SELECT 0::bigint AS team_id, NULL::jsonb AS profile
		UNION ALL
		SELECT t.id, x.profile
		  FROM @extschema@.teams t
		  LEFT JOIN @extschema@.ade_profiles x ON x.team_id = t.id
	), eff AS (
		SELECT tm.team_id, c.platform, coalesce(tm.profile, c.profile) AS profile
		  FROM tm CROSS JOIN chain c
	)
	SELECT e.team_id, e.platform, e.profile, md5(e.profile::text), d.profile_uuid
	  FROM eff e
	  LEFT JOIN @extschema@.ade_profile_definitions d
		ON d.token_id = p_token AND d.profile_key = md5(e.profile::text);
END
$$;
COMMENT ON FUNCTION ade_device_profiles(bigint) IS
	'the enrollment profile a device of this token gets, by team (0: none) and platform, with its profile_uuid once defined';

-- the candidates no longer return the profile itself
DROP FUNCTION ade_assign_candidates(bigint);
CREATE FUNCTION ade_assign_candidates(p_token bigint)
RETURNS TABLE (hardware_serial text, profile_key text, profile_uuid text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_changed text[];
BEGIN
	-- ABM asked for a pause (a 429's Retry-After): nothing is sent before
	IF EXISTS (SELECT 1 FROM @extschema@.abm_tokens t
				WHERE t.id = p_token AND t.assign_not_before > now()) THEN
		RETURN;
	END IF;
	SELECT array_agg(m.team_id || '/' || m.platform) INTO v_changed
	  FROM @extschema@.ade_device_profiles(p_token) m
	  LEFT JOIN @extschema@.ade_profile_applied a
		ON a.token_id = p_token AND a.scope = m.team_id || '/' || m.platform
	 WHERE a.profile_key IS DISTINCT FROM m.profile_key;
	IF v_changed IS NOT NULL THEN
		-- rare: a profile changed; mark the live devices it applies to that
		-- do not hold it (NOT_ACCESSIBLE waits for ABM to report the device)
		UPDATE @extschema@.host_dep_assignments d
		   SET needs_assign = true, updated_at = now()
		  FROM @extschema@.hosts h, @extschema@.ade_device_profiles(p_token) m
		 WHERE d.abm_token_id = p_token AND d.deleted_at IS NULL AND NOT d.needs_assign
		   AND d.assign_profile_response IS DISTINCT FROM 'NOT_ACCESSIBLE'
		   AND h.id = d.host_id
		   AND m.team_id = coalesce(h.team_id, 0) AND m.platform = h.platform
		   AND m.team_id || '/' || m.platform = ANY (v_changed)
		   AND m.profile IS NOT NULL
		   AND (m.profile_uuid IS NULL OR d.profile_uuid IS DISTINCT FROM m.profile_uuid);
		INSERT INTO @extschema@.ade_profile_applied AS a (token_id, scope, profile_key)
		SELECT p_token, m.team_id || '/' || m.platform, m.profile_key
		  FROM @extschema@.ade_device_profiles(p_token) m
		 WHERE m.team_id || '/' || m.platform = ANY (v_changed)
		ON CONFLICT (token_id, scope) DO UPDATE SET profile_key = excluded.profile_key;
		-- scopes gone with their team
		DELETE FROM @extschema@.ade_profile_applied a
		 WHERE a.token_id = p_token
		   AND NOT EXISTS (SELECT 1 FROM @extschema@.ade_device_profiles(p_token) m
							WHERE m.team_id || '/' || m.platform = a.scope);
	END IF;

	RETURN QUERY
	WITH due AS (
		SELECT d.hardware_serial, d.assign_sent_at, d.profile_uuid AS held,
			   m.profile_key, m.profile_uuid
		  FROM @extschema@.host_dep_assignments d
		  LEFT JOIN @extschema@.hosts h ON h.id = d.host_id
		  JOIN @extschema@.ade_device_profiles(p_token) m
			ON m.team_id = coalesce(h.team_id, 0)
		   AND m.platform = coalesce(h.platform, @extschema@.ade_platform(d.device->>'device_family'), 'darwin')
		 WHERE d.abm_token_id = p_token AND d.deleted_at IS NULL AND d.needs_assign
		   AND (d.retry_at IS NULL OR d.retry_at <= now())
		   AND m.profile IS NOT NULL
	), holding AS (
		-- marked, but it holds its profile already: nothing to send (a
		-- data-modifying WITH runs to completion, read or not)
		UPDATE @extschema@.host_dep_assignments d
		   SET needs_assign = false, retry_at = NULL, updated_at = now()
		  FROM due
		 WHERE due.profile_uuid IS NOT NULL AND due.held = due.profile_uuid
		   AND d.hardware_serial = due.hardware_serial
		RETURNING 1
	)
	SELECT due.hardware_serial, due.profile_key, due.profile_uuid
	  FROM due
	 WHERE (due.profile_uuid IS NULL OR due.held IS DISTINCT FROM due.profile_uuid)
	 ORDER BY due.assign_sent_at NULLS FIRST, due.profile_key, due.hardware_serial;
END
$$;
COMMENT ON FUNCTION ade_assign_candidates(bigint) IS
	'internal: the devices of a token due a profile assignment, with their profile';

CREATE OR REPLACE FUNCTION ade_unassignable(p_token bigint) RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_some boolean;
	v_all boolean;
	n bigint;
BEGIN
	SELECT bool_or(m.profile IS NOT NULL), bool_and(m.profile IS NOT NULL) INTO v_some, v_all
	  FROM @extschema@.ade_device_profiles(p_token) m;
	IF v_all THEN
		RETURN 0;
	ELSIF NOT v_some THEN
		-- no profile at all: every device waits; not counted, so that a run
		-- stays cheap at any size
		RETURN -1;
	END IF;
	SELECT count(*) INTO n
	  FROM @extschema@.host_dep_assignments d
	  LEFT JOIN @extschema@.hosts h ON h.id = d.host_id
	  JOIN @extschema@.ade_device_profiles(p_token) m
		ON m.team_id = coalesce(h.team_id, 0)
	   AND m.platform = coalesce(h.platform, @extschema@.ade_platform(d.device->>'device_family'), 'darwin')
	 WHERE d.abm_token_id = p_token AND d.needs_assign AND d.deleted_at IS NULL
	   AND m.profile IS NULL;
	RETURN n;
END
$$;
COMMENT ON FUNCTION ade_unassignable(bigint) IS
	'internal: how many live devices of a token wait for a profile that no scope defines (-1: no scope defines any)';

CREATE OR REPLACE FUNCTION ade_store_answers(p_token bigint, p_uuid text, p_serials text[],
	p_answer jsonb, p_retry_after int, p_failed_retry int,
	OUT assigned int, OUT failed int, OUT throttled boolean)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	WITH ans AS (
		SELECT s.serial,
			   CASE WHEN p_answer->'devices'->>s.serial IN ('SUCCESS', 'NOT_ACCESSIBLE', 'FAILED', 'THROTTLED')
					THEN p_answer->'devices'->>s.serial ELSE 'FAILED' END AS resp
		  FROM unnest(p_serials) AS s(serial)
	), upd AS (
		UPDATE @extschema@.host_dep_assignments d
		   SET profile_uuid = CASE WHEN a.resp = 'SUCCESS' THEN p_uuid ELSE d.profile_uuid END,
			   assign_profile_response = a.resp,
			   response_updated_at = now(),
			   assign_sent_at = now(),
			   needs_assign = a.resp IN ('FAILED', 'THROTTLED'),
			   retry_at = CASE a.resp
							WHEN 'FAILED' THEN now() + make_interval(secs => p_failed_retry)
							WHEN 'THROTTLED' THEN now() + make_interval(secs => coalesce(p_retry_after, 86400))
						  END,
			   updated_at = now()
		  FROM ans a
		 WHERE d.hardware_serial = a.serial AND d.abm_token_id = p_token
		RETURNING a.resp
	)
	SELECT count(*) FILTER (WHERE resp = 'SUCCESS')::int,
		   count(*) FILTER (WHERE resp <> 'SUCCESS')::int,
		   coalesce(bool_or(resp = 'THROTTLED'), false)
	  FROM upd
$$;
COMMENT ON FUNCTION ade_store_answers(bigint, text, text[], jsonb, int, int) IS
	'internal: stores each serial''s answer to PUT /profile/devices, with its cooldown';

CREATE FUNCTION ade_batch_unanswered(p_token bigint, p_serials text[], p_retry_after int)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	UPDATE @extschema@.host_dep_assignments d
	   SET assign_sent_at = now(), updated_at = now()
	 WHERE d.hardware_serial = ANY (p_serials) AND d.abm_token_id = p_token;
	UPDATE @extschema@.abm_tokens t
	   SET assign_not_before = now() + make_interval(secs => p_retry_after), updated_at = now()
	 WHERE p_retry_after IS NOT NULL AND t.id = p_token;
$$;
COMMENT ON FUNCTION ade_batch_unanswered(bigint, text[], int) IS
	'internal: marks the devices of a PUT /profile/devices that got no answer as sent, to the back of the queue; after a long 429, the token''s devices wait';

-- a page: one statement when every record applies, one record at a time
-- (the bad ones kept in ade_rejected_records) when one does not
CREATE FUNCTION ade_record_error(p_sqlstate text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT pg_catalog.left(p_sqlstate, 2) OPERATOR(pg_catalog.=)
		   ANY (ARRAY['22', '23', '2F', '38', '39', '44', '54', 'P0'])
	   AND p_sqlstate OPERATOR(pg_catalog.<>) 'P0004'
$$;
COMMENT ON FUNCTION ade_record_error(text) IS
	'internal: whether an error is a device record''s (kept aside) rather than the run''s';

CREATE FUNCTION ade_apply_records(p_token bigint, p_devices jsonb, p_fetch boolean,
	p_as_of timestamptz,
	OUT added int, OUT modified int, OUT deleted int, OUT skipped int)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
-- a generic plan made while the tables were empty would scan them whole on
-- every page of a large first fetch (quadratic); plan each page afresh
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
	v_freed text[];
BEGIN
	WITH recs AS (
		-- no WHERE here: a filter would make the planner expect one row per
		-- page, and choose plans that scan whole tables per record
		SELECT e.rec, e.ord,
			   CASE WHEN jsonb_typeof(e.rec) = 'object'
					THEN nullif(e.rec->>'serial_number', '') END AS serial,
			   CASE WHEN p_fetch THEN 'added'
					ELSE coalesce(e.rec->>'op_type', 'modified') END AS op,
			   -- a fetched record has no op_date: it says what ABM held as
			   -- of the page's fetched_until
			   -- (an op_date of +-infinity is no date: it would pin the device)
			   coalesce(nullif(nullif((e.rec->>'op_date')::timestamptz, 'infinity'), '-infinity'), p_as_of) AS op_date
		  FROM jsonb_array_elements(coalesce(p_devices, '[]'::jsonb)) WITH ORDINALITY AS e(rec, ord)
	), win AS (				-- rule 4: one record per serial, the latest op_date
		SELECT DISTINCT ON (r.serial) r.*
		  FROM recs r
		 WHERE r.serial IS NOT NULL
		 ORDER BY r.serial, r.op_date DESC NULLS LAST, r.ord DESC
	), tk AS (					-- the token's default teams
		SELECT t.macos_team_id, t.ios_team_id, t.ipados_team_id
		  FROM @extschema@.abm_tokens t WHERE t.id = p_token
	), plan0 AS (
		SELECT w.serial, w.rec, w.op, w.op_date, h.id AS host_id,
			   coalesce(@extschema@.ade_platform(w.rec->>'device_family'), h.platform, 'darwin') AS platform,
			   coalesce(w.rec->>'model', h.hardware_model) AS model,
			   d.assign_profile_response AS response,
			   d.abm_token_id AS prev_token, d.host_id AS prev_host, h.team_id AS host_team,
			   (d.hardware_serial IS NOT NULL AND d.deleted_at IS NULL) AS prev_live,
			   CASE
				 -- older than what was applied already: a page sent again,
				 -- or an old record of a token that no longer holds it
				 WHEN w.op_date < d.op_date THEN 'stale'
				 -- op_date has whole seconds: within one token's stream the
				 -- order is reliable, across tokens only a later op_date
				 -- is: a record of the same second as the last one of a
				 -- device another token holds live waits for that token's
				 -- delete (ade_tied_records)
				 WHEN w.op_date = d.op_date AND d.deleted_at IS NULL
					  AND d.abm_token_id <> p_token THEN 'tied'
				 WHEN w.op = 'deleted' THEN 'deleted'
				 WHEN w.op <> 'added' AND d.deleted_at IS NULL
					  AND d.abm_token_id = p_token THEN 'modified'
				 ELSE 'added'	-- rule 6: an unknown serial is added
			   END AS act,
			   -- the profile ABM says the device holds
			   CASE WHEN w.rec->>'profile_status' IN ('assigned', 'pushed')
					THEN nullif(w.rec->>'profile_uuid', '') END AS held
		  FROM win w
		  -- LATERAL with OFFSET 0 (not flattened into a join): one index
		  -- probe per record, never a hash of the whole table
		  LEFT JOIN LATERAL (SELECT * FROM @extschema@.host_dep_assignments x
							  WHERE x.hardware_serial = w.serial OFFSET 0) d ON true
		  LEFT JOIN LATERAL (SELECT * FROM @extschema@.hosts y
							  WHERE y.hardware_serial = w.serial OFFSET 0) h ON true
	), plan1 AS (
		-- a new host lands in its token's default team for its platform
		-- (tvOS and visionOS follow iOS); an existing host keeps its team,
		-- none included
		SELECT p.*,
			   CASE WHEN p.host_id IS NOT NULL THEN p.host_team
					ELSE CASE p.platform WHEN 'darwin' THEN tk.macos_team_id
										 WHEN 'ipados' THEN tk.ipados_team_id
										 ELSE tk.ios_team_id END
			   END AS team_id
		  FROM plan0 p LEFT JOIN tk ON true
	), plan2 AS (
		-- rules 5, 6 and 10: does the device hold its profile?  Which one is
		-- its comes from ade_device_profiles(), as for the assignment: an
		-- assignment echoed back as modified is never sent again.  Any record
		-- of a device that was NOT_ACCESSIBLE makes it due again.
		SELECT p.*, m.profile_uuid AS ours,
			   coalesce(p.held = m.profile_uuid, false) AS has_ours
		  FROM plan1 p
		  LEFT JOIN @extschema@.ade_device_profiles(p_token) m
			ON m.team_id = coalesce(p.team_id, 0) AND m.platform = p.platform
	), plan AS (
		-- took: the record changed who holds the device or what it is
		SELECT p.*,
			   (p.act IN ('added', 'modified')
				OR (p.act = 'deleted' AND p.prev_live AND p.prev_token = p_token)) AS took
		  FROM plan2 p
	), up_hosts AS (
		INSERT INTO @extschema@.hosts AS h (hardware_serial, hardware_model, platform, team_id)
		SELECT p.serial, p.model, p.platform, p.team_id
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
			   NOT p.has_ours, p.held,
			   CASE WHEN p.has_ours THEN 'SUCCESS' END,
			   -- a marker for DO UPDATE: keep the cooldown (FAILED,
			   -- THROTTLED) of a device that stays with this token: a
			   -- modification, or a full fetch listing it again (a new row
			   -- never has one); being added or moved, or any news of a
			   -- device that was NOT_ACCESSIBLE, ends it
			   CASE WHEN (p.act = 'modified' OR (p_fetch AND p.prev_live AND p.prev_token = p_token))
						 AND p.response IS DISTINCT FROM 'NOT_ACCESSIBLE'
					THEN 'infinity'::timestamptz END,
			   now()
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
			   retry_at = CASE WHEN excluded.retry_at = 'infinity' THEN d.retry_at END,
			   -- what ABM says it holds; a SUCCESS it no longer holds is past
			   profile_uuid = excluded.profile_uuid,
			   assign_profile_response = CASE
					WHEN excluded.assign_profile_response IS NOT NULL THEN excluded.assign_profile_response
					WHEN d.assign_profile_response = 'SUCCESS' THEN NULL
					ELSE d.assign_profile_response END,
			   updated_at = now()
		RETURNING 1
	), del AS (					-- rule 7: only the token that holds it
		UPDATE @extschema@.host_dep_assignments d
		   SET deleted_at = now(), needs_assign = false,
			   op_date = coalesce(p.op_date, d.op_date), updated_at = now()
		  FROM plan p
		 WHERE p.act = 'deleted' AND d.hardware_serial = p.serial
		   AND d.abm_token_id = p_token AND d.deleted_at IS NULL
		RETURNING d.hardware_serial
	), superseded AS (
		-- a kept record is replaced by later news of its serial: any later
		-- record of its own token (a stream is in order), or a strictly
		-- newer record of another token that took effect
		DELETE FROM @extschema@.ade_rejected_records r
		 USING plan p
		 WHERE r.hardware_serial = p.serial
		   AND ((r.token_id = p_token AND r.op_date <= p.op_date)
				OR (r.token_id <> p_token AND p.took AND r.op_date < p.op_date))
		RETURNING 1
	), tie AS (					-- a tied record waits; a tied delete withdraws it
		INSERT INTO @extschema@.ade_tied_records AS t
			(hardware_serial, token_id, record, from_fetch, op_date)
		SELECT p.serial, p_token, p.rec, p_fetch, p.op_date
		  FROM plan p
		 WHERE p.act = 'tied' AND p.op <> 'deleted'
		ON CONFLICT (hardware_serial, token_id) DO UPDATE
		   SET record = excluded.record, from_fetch = excluded.from_fetch,
			   op_date = excluded.op_date
		 WHERE t.op_date <= excluded.op_date
		RETURNING 1
	), untie AS (
		-- moot: a later record of the same token, or a strictly newer one
		-- that took effect (the holder's delete of the same second is
		-- what releases them: below)
		DELETE FROM @extschema@.ade_tied_records t
		 USING plan p
		 WHERE t.hardware_serial = p.serial
		   AND ((t.token_id = p_token AND t.op_date <= p.op_date
				 AND NOT (p.act = 'tied' AND p.op <> 'deleted'))
				OR (t.token_id <> p_token AND p.took AND t.op_date < p.op_date))
		RETURNING 1
	), unusable AS (			-- a record without a serial is kept once, never dropped
		INSERT INTO @extschema@.ade_rejected_records
			(token_id, hardware_serial, record, from_fetch, fetched_until, op_date, reason)
		SELECT p_token, NULL, r.rec, p_fetch, p_as_of, NULL, 'the record has no serial_number'
		  FROM recs r
		 WHERE r.serial IS NULL
		ON CONFLICT DO NOTHING
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
	)
	-- (the data-modifying WITHs run to completion, read or not)
	SELECT (SELECT count(*) FROM plan p WHERE p.act = 'added'),
		   (SELECT count(*) FROM plan p WHERE p.act = 'modified'),
		   (SELECT count(*) FROM del),
		   (SELECT count(*) FROM recs r WHERE r.serial IS NULL)
			 -- a full fetch announces itself once, at the end of the run (src/sync.c):
			 -- payloads of a million hosts would wait in memory until it commits
			 + (SELECT @extschema@.ade_notify_hosts(array_agg(e.event), array_agg(e.id),
												 array_agg(e.serial), array_agg(p_token))
				  FROM ev e) * 0,
		   (SELECT array_agg(x.hardware_serial) FROM del x)
	  INTO added, modified, deleted, skipped, v_freed;
	-- a device its holder let go goes to the token of a tied record
	IF v_freed IS NOT NULL THEN
		PERFORM @extschema@.ade_release_tied(v_freed);
	END IF;
END
$$;
COMMENT ON FUNCTION ade_apply_records(bigint, jsonb, boolean, timestamptz) IS
	'internal: applies device records of one token (sync rules 4-8) in one statement';

CREATE FUNCTION ade_release_tied(p_serials text[]) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
BEGIN
	FOR r IN
		SELECT DISTINCT ON (t.hardware_serial) t.token_id, t.record, t.from_fetch, t.op_date
		  FROM @extschema@.ade_tied_records t
		 WHERE t.hardware_serial = ANY (p_serials)
		 ORDER BY t.hardware_serial, t.op_date DESC, t.token_id
	LOOP
		-- not tied any more (the device is not live): it applies, and
		-- leaves ade_tied_records
		PERFORM @extschema@.ade_apply_records(r.token_id, jsonb_build_array(r.record),
											 r.from_fetch, r.op_date);
	END LOOP;
END
$$;
COMMENT ON FUNCTION ade_release_tied(text[]) IS
	'internal: gives devices their holder let go to the token of their latest tied record';

CREATE FUNCTION ade_record_op_date(p_rec jsonb, p_as_of timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF jsonb_typeof(p_rec) <> 'object' THEN
		RETURN NULL;
	END IF;
	RETURN coalesce(nullif(nullif((p_rec->>'op_date')::timestamptz, 'infinity'), '-infinity'), p_as_of);
EXCEPTION WHEN data_exception THEN
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_record_op_date(jsonb, timestamptz) IS
	'internal: the op_date of a device record, NULL when it is not a date';

CREATE FUNCTION ade_apply_halves(p_token bigint, p_devices jsonb, p_fetch boolean,
	p_as_of timestamptz,
	OUT added int, OUT modified int, OUT deleted int, OUT skipped int)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n int := jsonb_array_length(p_devices);
	r record;
	v_state text;
	v_msg text;
	v_rec jsonb;
	v_part int;
BEGIN
	added := 0; modified := 0; deleted := 0; skipped := 0;
	IF n = 0 THEN
		RETURN;
	END IF;
	BEGIN
		SELECT a.* INTO r FROM @extschema@.ade_apply_records(p_token, p_devices, p_fetch, p_as_of) a;
		added := r.added; modified := r.modified; deleted := r.deleted; skipped := r.skipped;
		RETURN;
	EXCEPTION WHEN OTHERS THEN
		v_state := SQLSTATE;
		IF NOT @extschema@.ade_record_error(v_state) THEN
			RAISE;
		END IF;
		v_msg := SQLERRM;
	END;
	IF n > 1 THEN
		FOR v_part IN 1 .. 2 LOOP
			SELECT h.* INTO r
			  FROM @extschema@.ade_apply_halves(p_token,
					(SELECT jsonb_agg(e.rec ORDER BY e.ord)
					   FROM jsonb_array_elements(p_devices) WITH ORDINALITY AS e(rec, ord)
					  WHERE (e.ord <= n / 2) = (v_part = 1)),
					p_fetch, p_as_of) h;
			added := added + r.added; modified := modified + r.modified;
			deleted := deleted + r.deleted; skipped := skipped + r.skipped;
		END LOOP;
		RETURN;
	END IF;
	-- the one record that does not apply: kept, one row per serial and
	-- token (the latest record)
	v_rec := p_devices->0;
	INSERT INTO @extschema@.ade_rejected_records AS x
		(token_id, hardware_serial, record, from_fetch, fetched_until, op_date,
		 reason, sqlstate, retry_at)
	VALUES (p_token,
			CASE WHEN jsonb_typeof(v_rec) = 'object' THEN v_rec->>'serial_number' END,
			v_rec, p_fetch, p_as_of, @extschema@.ade_record_op_date(v_rec, p_as_of),
			v_msg, v_state,
			now() + coalesce(current_setting('ade.failed_retry_interval', true), '1h')::interval)
	ON CONFLICT (token_id, (hardware_serial IS NULL), md5(coalesce(hardware_serial, record::text)))
	DO UPDATE SET record = excluded.record, from_fetch = excluded.from_fetch,
				  fetched_until = excluded.fetched_until, op_date = excluded.op_date,
				  reason = excluded.reason, sqlstate = excluded.sqlstate,
				  rejected_at = now(), tries = 1, retry_at = excluded.retry_at
	 WHERE x.op_date IS NULL OR excluded.op_date IS NULL OR x.op_date <= excluded.op_date;
	skipped := 1;
END
$$;
COMMENT ON FUNCTION ade_apply_halves(bigint, jsonb, boolean, timestamptz) IS
	'internal: applies records in halves down to the one that does not apply, which is kept in ade_rejected_records';

CREATE FUNCTION ade_apply_devices(p_token bigint, p_devices jsonb, p_fetch boolean,
	p_as_of timestamptz,
	OUT added int, OUT modified int, OUT deleted int, OUT skipped int)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_list jsonb;
BEGIN
	BEGIN
		SELECT a.added, a.modified, a.deleted, a.skipped INTO added, modified, deleted, skipped
		  FROM @extschema@.ade_apply_records(p_token, p_devices, p_fetch, p_as_of) a;
		RETURN;
	EXCEPTION WHEN OTHERS THEN
		IF NOT @extschema@.ade_record_error(SQLSTATE) THEN
			RAISE;
		END IF;
	END;
	SELECT jsonb_agg(x.rec ORDER BY x.ord) INTO v_list
	  FROM (SELECT DISTINCT ON (x.k) x.rec, x.ord
			  FROM (SELECT e.rec, e.ord,
						   coalesce(CASE WHEN jsonb_typeof(e.rec) = 'object' THEN 's:' || (e.rec->>'serial_number') END,
									'o:' || e.ord) AS k,
						   @extschema@.ade_record_op_date(e.rec, p_as_of) AS op_date
					  FROM jsonb_array_elements(p_devices) WITH ORDINALITY AS e(rec, ord)) x
			 ORDER BY x.k, x.op_date DESC NULLS LAST, x.ord DESC) x;
	SELECT h.added, h.modified, h.deleted, h.skipped INTO added, modified, deleted, skipped
	  FROM @extschema@.ade_apply_halves(p_token, v_list, p_fetch, p_as_of) h;
END
$$;
COMMENT ON FUNCTION ade_apply_devices(bigint, jsonb, boolean, timestamptz) IS
	'internal: applies device records; a record that cannot be applied is kept in ade_rejected_records and the rest applies';

CREATE OR REPLACE FUNCTION ade_apply_page(p_token bigint, p_devices jsonb, p_fetch boolean,
	p_cursor text, p_mode text, p_fetched_until text,
	OUT added int, OUT modified int, OUT deleted int, OUT skipped int)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_prev text;
	v_started timestamptz;
	v_restored timestamptz;
	v_freed text[];
	v_note int;
BEGIN
	added := 0; modified := 0; deleted := 0; skipped := 0;
	IF coalesce(jsonb_array_length(p_devices), 0) > 0 THEN
		SELECT a.added, a.modified, a.deleted, a.skipped INTO added, modified, deleted, skipped
		  FROM @extschema@.ade_apply_devices(p_token, p_devices, p_fetch, p_fetched_until::timestamptz) a;
	END IF;
	SELECT t.mode, t.fetch_started_at, t.restored_at INTO v_prev, v_started, v_restored
	  FROM @extschema@.abm_tokens t WHERE t.id = p_token;
	UPDATE @extschema@.abm_tokens t
	   SET cursor = p_cursor, mode = p_mode,
		   fetch_started_at = CASE WHEN p_mode = 'fetch' AND p_cursor IS NULL
								   THEN now() ELSE t.fetch_started_at END,
		   fetched_until = coalesce(p_fetched_until::timestamptz, t.fetched_until),
		   -- a page of the cursor kept by a restore answered: it brings
		   -- what changed while the token was away
		   restored_at = CASE WHEN p_cursor IS NOT NULL
								   AND (v_started IS NULL OR v_started < v_restored)
							  THEN NULL ELSE t.restored_at END,
		   updated_at = now()
	 WHERE t.id = p_token;
	-- a full fetch ended: a device the token holds that it did not list
	-- (untouched since the fetch began) is soft-deleted when another
	-- token's record of the same second claims it (its delete was lost
	-- with an expired cursor), or when a restore brought it back on the
	-- word of a cursor that expired before it answered
	IF v_prev = 'fetch' AND p_mode = 'sync' AND v_started IS NOT NULL THEN
		WITH unlisted AS (
			UPDATE @extschema@.host_dep_assignments d
			   SET deleted_at = now(), needs_assign = false, updated_at = now()
			 WHERE d.abm_token_id = p_token AND d.deleted_at IS NULL
			   AND d.updated_at < v_started
			   AND (v_restored IS NOT NULL
					OR EXISTS (SELECT 1 FROM @extschema@.ade_tied_records t
								WHERE t.hardware_serial = d.hardware_serial AND t.token_id <> p_token))
			   -- listed by this fetch, but its record is kept aside (it
			   -- could not apply)
			   AND NOT EXISTS (SELECT 1 FROM @extschema@.ade_rejected_records x
								WHERE x.token_id = p_token AND x.hardware_serial = d.hardware_serial
								  AND x.from_fetch AND x.rejected_at >= v_started)
			RETURNING d.host_id, d.hardware_serial)
		SELECT array_agg(u.hardware_serial),
			   @extschema@.ade_notify_hosts(array_agg('deleted'::text), array_agg(u.host_id),
										   array_agg(u.hardware_serial), array_agg(p_token))
		  INTO v_freed, v_note
		  FROM unlisted u;
		IF v_freed IS NOT NULL THEN
			PERFORM @extschema@.ade_release_tied(v_freed);
		END IF;
		IF v_restored IS NOT NULL THEN
			UPDATE @extschema@.abm_tokens t SET restored_at = NULL WHERE t.id = p_token;
		END IF;
	END IF;
END
$$;
COMMENT ON FUNCTION ade_apply_page(bigint, jsonb, boolean, text, text, text) IS
	'internal: applies one ABM page (sync rules 4-8) and stores the cursor, in one statement';

CREATE FUNCTION ade_retry_rejected(p_token bigint, p_deadline timestamptz) RETURNS int
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
	n int := 0;
	v_state text;
BEGIN
	FOR r IN
		SELECT x.id, x.record, x.from_fetch, x.fetched_until FROM @extschema@.ade_rejected_records x
		 WHERE x.token_id = p_token AND x.retry_at <= now()
		 ORDER BY x.retry_at, x.id
	LOOP
		EXIT WHEN clock_timestamp() >= p_deadline;
		BEGIN
			PERFORM @extschema@.ade_apply_records(p_token, jsonb_build_array(r.record), r.from_fetch, r.fetched_until);
			DELETE FROM @extschema@.ade_rejected_records x WHERE x.id = r.id;
			n := n + 1;
		EXCEPTION WHEN OTHERS THEN
			v_state := SQLSTATE;
			IF NOT @extschema@.ade_record_error(v_state) THEN
				RAISE;
			END IF;
			UPDATE @extschema@.ade_rejected_records x
			   SET reason = SQLERRM, sqlstate = v_state, tries = x.tries + 1,
				   retry_at = now() + coalesce(current_setting('ade.failed_retry_interval', true), '1h')::interval
			 WHERE x.id = r.id;
		END;
	END LOOP;
	RETURN n;
END
$$;
COMMENT ON FUNCTION ade_retry_rejected(bigint, timestamptz) IS
	'internal: tries the due records of ade_rejected_records of a token again';

-- hosts made again keep their team, move the id sequence past their id, and
-- are made for any role allowed to delete, truncate or re-serial hosts
CREATE FUNCTION ade_hosts_id_past() RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_max bigint;
BEGIN
	SELECT greatest((SELECT max(h.id) FROM @extschema@.hosts h),
					(SELECT max(d.host_id) FROM @extschema@.host_dep_assignments d))
	  INTO v_max;
	PERFORM pg_catalog.setval('@extschema@.hosts_id_seq', v_max)
	   FROM @extschema@.hosts_id_seq s
	  WHERE v_max >= CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END;
END
$$;
COMMENT ON FUNCTION ade_hosts_id_past() IS
	'internal: moves the hosts id sequence past every id of hosts and host_dep_assignments';

CREATE FUNCTION ade_restore_hosts(p_ids bigint[], p_models text[], p_platforms text[], p_teams bigint[])
RETURNS int
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n int;
BEGIN
	WITH restored AS (
		INSERT INTO @extschema@.hosts (id, hardware_serial, hardware_model, platform,
									   team_id, created_at, updated_at)
		SELECT o.id, d.hardware_serial,
			   coalesce(d.device->>'model', o.model),
			   coalesce(@extschema@.ade_platform(d.device->>'device_family'), o.platform, 'darwin'),
			   o.team_id, now(), now()
		  FROM unnest(p_ids, p_models, p_platforms, p_teams) AS o(id, model, platform, team_id)
		  JOIN @extschema@.host_dep_assignments d
			ON d.host_id = o.id AND d.deleted_at IS NULL
		 ORDER BY o.id
		RETURNING id, hardware_serial
	), told AS (
		SELECT @extschema@.ade_notify_hosts(array_agg('restored'::text), array_agg(r.id),
											array_agg(r.hardware_serial), array_agg(d.abm_token_id))
		  FROM restored r JOIN @extschema@.host_dep_assignments d ON d.host_id = r.id
	)
	SELECT count(*) INTO n FROM restored r, told;
	IF n > 0 THEN
		PERFORM @extschema@.ade_hosts_id_past();
	END IF;
	RETURN n;
END
$$;
COMMENT ON FUNCTION ade_restore_hosts(bigint[], text[], text[], bigint[]) IS
	'internal: makes again the given hosts whose ADE assignment is live (same id, data of the last ABM record, same team)';

CREATE OR REPLACE FUNCTION ade_hosts_after_delete() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- a device soft-deleted as this statement sees it, that a restore
	-- (ade_token_row()) has brought back meanwhile: the lock waits for that
	-- restore, and is a serialization failure under REPEATABLE READ or
	-- SERIALIZABLE (the application tries again); under READ COMMITTED the
	-- next statement sees it live and makes its host again
	PERFORM 1
	   FROM ade_deleted_hosts o
	   JOIN @extschema@.host_dep_assignments d ON d.host_id = o.id AND d.deleted_at IS NOT NULL
	    FOR SHARE OF d;
	PERFORM @extschema@.ade_restore_hosts(array_agg(o.id), array_agg(o.hardware_model),
										  array_agg(o.platform), array_agg(o.team_id))
	   FROM ade_deleted_hosts o;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_hosts_after_delete() IS
	'trigger: re-creates deleted hosts whose ADE assignment is live (same id, data of the last ABM record, same team)';

CREATE FUNCTION ade_hosts_before_truncate() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- TRUNCATE takes every row, whatever the snapshot; under REPEATABLE
	-- READ or SERIALIZABLE these triggers would read the assignments as of
	-- the transaction's start and miss a device made live since
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION 'TRUNCATE hosts keeps the hosts of live devices only under READ COMMITTED'
			USING ERRCODE = 'feature_not_supported',
				  HINT = 'Run it in a READ COMMITTED transaction, or use DELETE FROM hosts.';
	END IF;
	DELETE FROM @extschema@.ade_truncated_hosts;
	INSERT INTO @extschema@.ade_truncated_hosts (id, hardware_model, platform, team_id)
	SELECT h.id, h.hardware_model, h.platform, h.team_id
	  FROM @extschema@.hosts h
	  JOIN @extschema@.host_dep_assignments d ON d.host_id = h.id AND d.deleted_at IS NULL;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_hosts_before_truncate() IS
	'trigger: before TRUNCATE hosts, keeps what the live-assigned hosts were';

CREATE TRIGGER ade_keep_live_hosts_before_truncate BEFORE TRUNCATE ON hosts
	FOR EACH STATEMENT EXECUTE FUNCTION ade_hosts_before_truncate();

CREATE OR REPLACE FUNCTION ade_hosts_after_truncate() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n int;
BEGIN
	WITH kept AS (
		DELETE FROM @extschema@.ade_truncated_hosts RETURNING *
	)
	SELECT @extschema@.ade_restore_hosts(array_agg(d.host_id), array_agg(k.hardware_model),
										 array_agg(k.platform), array_agg(k.team_id))
	  INTO n
	  FROM @extschema@.host_dep_assignments d
	  LEFT JOIN kept k ON k.id = d.host_id
	 WHERE d.deleted_at IS NULL;
	-- after RESTART IDENTITY, even with nothing made again
	PERFORM @extschema@.ade_hosts_id_past();
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_hosts_after_truncate() IS
	'trigger: after TRUNCATE hosts, re-creates the hosts whose ADE assignment is live';

CREATE FUNCTION ade_hosts_reserialed() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id bigint;
	v_token bigint;
BEGIN
	-- a soft-deleted device that pointed at this host gives the id up: the
	-- host is another device's now, and that device may come from ABM
	UPDATE @extschema@.host_dep_assignments d
	   SET host_id = pg_catalog.nextval('@extschema@.hosts_id_seq'), updated_at = now()
	 WHERE d.hardware_serial = OLD.hardware_serial AND d.host_id = OLD.id
	   AND d.deleted_at IS NOT NULL;
	INSERT INTO @extschema@.hosts (hardware_serial, hardware_model, platform, team_id)
	SELECT d.hardware_serial, coalesce(d.device->>'model', OLD.hardware_model),
		   coalesce(@extschema@.ade_platform(d.device->>'device_family'), OLD.platform),
		   OLD.team_id
	  FROM @extschema@.host_dep_assignments d
	 WHERE d.hardware_serial = OLD.hardware_serial AND d.host_id = OLD.id AND d.deleted_at IS NULL
	RETURNING id INTO v_id;
	IF v_id IS NOT NULL THEN
		UPDATE @extschema@.host_dep_assignments d
		   SET host_id = v_id, updated_at = now()
		 WHERE d.hardware_serial = OLD.hardware_serial
		RETURNING d.abm_token_id INTO v_token;
		PERFORM @extschema@.ade_notify_hosts(ARRAY['restored'], ARRAY[v_id], ARRAY[OLD.hardware_serial], ARRAY[v_token]);
	END IF;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_hosts_reserialed() IS
	'trigger: a live-assigned host whose serial is changed by hand leaves a host for the device ABM assigns';

CREATE TRIGGER ade_keep_live_hosts_reserialed AFTER UPDATE OF hardware_serial ON hosts
	FOR EACH ROW WHEN (OLD.hardware_serial OPERATOR(pg_catalog.<>) NEW.hardware_serial)
	EXECUTE FUNCTION ade_hosts_reserialed();

CREATE FUNCTION ade_hosts_renumbered() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE @extschema@.host_dep_assignments d
	   SET host_id = pg_catalog.nextval('@extschema@.hosts_id_seq'), updated_at = now()
	 WHERE d.host_id = NEW.id AND d.hardware_serial <> NEW.hardware_serial
	   AND d.deleted_at IS NOT NULL;
	UPDATE @extschema@.host_dep_assignments d
	   SET host_id = NEW.id, updated_at = now()
	 WHERE d.host_id = OLD.id AND d.hardware_serial = NEW.hardware_serial;
	PERFORM @extschema@.ade_hosts_id_past();
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_hosts_renumbered() IS
	'trigger: the device of a host whose id is changed by hand follows it';

CREATE TRIGGER ade_keep_live_hosts_renumbered AFTER UPDATE OF id ON hosts
	FOR EACH ROW WHEN (OLD.id OPERATOR(pg_catalog.<>) NEW.id)
	EXECUTE FUNCTION ade_hosts_renumbered();


CREATE OR REPLACE FUNCTION ade_hosts_check_team() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM @extschema@.teams t WHERE t.id = NEW.team_id FOR KEY SHARE) THEN
		RAISE EXCEPTION 'team % does not exist', NEW.team_id
			USING ERRCODE = 'foreign_key_violation';
	END IF;
	RETURN NEW;
END
$$;
COMMENT ON FUNCTION ade_hosts_check_team() IS 'trigger: hosts.team_id names a team that exists';

CREATE OR REPLACE FUNCTION ade_teams_after_delete() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE @extschema@.hosts h SET team_id = NULL, updated_at = now()
	 WHERE h.team_id IN (SELECT o.id FROM ade_deleted_teams o);
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_teams_after_delete() IS 'trigger: the hosts of a deleted team have no team';

CREATE OR REPLACE FUNCTION ade_hosts_team_moved() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE @extschema@.host_dep_assignments d
	   SET needs_assign = true, updated_at = now()
	 WHERE d.host_id = NEW.id AND d.deleted_at IS NULL AND NOT d.needs_assign
	   AND d.assign_profile_response IS DISTINCT FROM 'NOT_ACCESSIBLE';
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_hosts_team_moved() IS
	'trigger: a live host moved to another team is marked, to get its new team''s profile';

-- ---------------------------------------------------------------------
-- Hardening from a security review (issue 13)
-- ---------------------------------------------------------------------

-- data keys in the database, sealed with one key-encryption key file
CREATE TABLE ade_secret_keys (
	id				text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{8}$'),
	wrapped			bytea NOT NULL,
	current			boolean NOT NULL DEFAULT false,
	created_at		timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ade_secret_keys_current_idx ON ade_secret_keys (current) WHERE current;
COMMENT ON TABLE ade_secret_keys IS 'the data keys that seal the stored secrets, sealed with the key-encryption key file; readable by the extension owner only';
SELECT pg_catalog.pg_extension_config_dump('ade_secret_keys', '');
REVOKE ALL ON ade_secret_keys FROM PUBLIC;

-- the private key as bytes, never as statement text
-- a key pasted as text still works, with a WARNING (it was exposed)
COMMENT ON FUNCTION ade_import_key(text, text) IS
	'replaces the MDM server key pair from PEM text pasted into the statement, with a WARNING: pass the file''s bytes instead';
CREATE FUNCTION ade_import_key(private_key bytea, certificate bytea DEFAULT NULL) RETURNS text
	AS 'MODULE_PATHNAME', 'ade_import_key_bytea' LANGUAGE C VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_import_key(bytea, bytea) IS
	'replaces the MDM server key pair with a PEM private key file''s bytes (and its certificate, else a new self-signed one); returns the certificate';

COMMENT ON FUNCTION ade_rotate_secret_key() IS
	'makes a new data key (in ade_secret_keys, sealed with the key-encryption key) and re-seals every stored secret with it; returns its id';

CREATE FUNCTION ade_vault_upgrade() RETURNS void
	AS 'MODULE_PATHNAME', 'ade_vault_upgrade' LANGUAGE C STRICT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_vault_upgrade() IS
	'internal: re-seals the secrets of 0.3 with a data key (the upgrade to 0.4)';

CREATE FUNCTION ade_secret_status() RETURNS text
	AS 'MODULE_PATHNAME', 'ade_secret_status' LANGUAGE C VOLATILE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_secret_status() IS
	'what, if anything, is wrong with the key-encryption key file, in words; null when nothing';

CREATE VIEW ade_secret_key_usage AS
WITH sealed(v) AS (
	SELECT s.consumer_secret FROM @extschema@.ade_token_secrets s
	UNION ALL SELECT s.access_token FROM @extschema@.ade_token_secrets s
	UNION ALL SELECT s.access_secret FROM @extschema@.ade_token_secrets s
	UNION ALL SELECT s.session_token FROM @extschema@.ade_token_secrets s WHERE s.session_token IS NOT NULL
	UNION ALL SELECT k.private_key FROM @extschema@.ade_keypair k
), used AS (
	SELECT pg_catalog.substr(x.v, 1, 4) AS format, pg_catalog.substr(x.v, 6, 8) AS key_id,
		   pg_catalog.count(*) AS n
	  FROM sealed x
	 GROUP BY 1, 2
)
SELECT coalesce(k.id, u.key_id) AS key_id,
	   CASE WHEN u.format OPERATOR(pg_catalog.=) 'ade1'
			THEN pg_catalog.format('file ade_secrets_%s.key (0.3)', u.key_id)
			ELSE 'ade_secret_keys' END AS stored_in,
	   coalesce(k.current, false) AS current,
	   k.created_at,
	   coalesce(u.n, 0) AS sealed_values
  FROM @extschema@.ade_secret_keys k
  FULL JOIN used u ON u.key_id OPERATOR(pg_catalog.=) k.id AND u.format OPERATOR(pg_catalog.=) 'ade2';
COMMENT ON VIEW ade_secret_key_usage IS
	'every key a stored secret is sealed with, and how many secrets; a key not current with none is no longer used';

REVOKE ALL ON FUNCTION ade_import_key(bytea, bytea), ade_vault_upgrade(), ade_secret_status() FROM PUBLIC;
REVOKE ALL ON ade_secret_key_usage FROM PUBLIC;

CREATE FUNCTION ade_secret_keys_in_use() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	IF TG_OP = 'UPDATE' AND NEW.id = OLD.id AND NEW.wrapped = OLD.wrapped THEN
		RETURN NEW;				-- current moves with a rotation
	END IF;
	SELECT u.sealed_values INTO n FROM @extschema@.ade_secret_key_usage u WHERE u.key_id = OLD.id;
	IF coalesce(n, 0) > 0 THEN
		RAISE EXCEPTION 'data key % still seals % stored values', OLD.id, n
			USING ERRCODE = 'object_in_use',
				  HINT = 'SELECT ade_rotate_secret_key() re-seals every value with a new key; then the old one may go.';
	END IF;
	IF TG_OP = 'UPDATE' THEN
		RETURN NEW;
	END IF;
	RETURN OLD;
END
$$;
COMMENT ON FUNCTION ade_secret_keys_in_use() IS
	'trigger: refuses to delete, rename or replace a data key that still seals a stored value';

CREATE TRIGGER ade_secret_keys_in_use BEFORE DELETE OR UPDATE OF id, wrapped ON ade_secret_keys
	FOR EACH ROW EXECUTE FUNCTION ade_secret_keys_in_use();

CREATE FUNCTION ade_vault_init() RETURNS void
	AS 'MODULE_PATHNAME', 'ade_vault_init' LANGUAGE C VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_vault_init() IS
	'internal: makes the key-encryption key file ade_kek.key in the data directory, if missing';

CREATE FUNCTION ade_secret_keys_truncate() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	SELECT sum(u.sealed_values) INTO n FROM @extschema@.ade_secret_key_usage u;
	IF coalesce(n, 0) > 0 THEN
		RAISE EXCEPTION 'the data keys still seal % stored values', n
			USING ERRCODE = 'object_in_use',
				  HINT = 'Delete the keys that seal nothing (see ade_secret_key_usage) instead.';
	END IF;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_secret_keys_truncate() IS
	'trigger: refuses to truncate the data keys while they seal a stored value';

CREATE TRIGGER ade_secret_keys_truncate BEFORE TRUNCATE ON ade_secret_keys
	FOR EACH STATEMENT EXECUTE FUNCTION ade_secret_keys_truncate();

REVOKE ALL ON FUNCTION ade_secret_keys_in_use(), ade_secret_keys_truncate(), ade_vault_init() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ade_secret_status() TO ade_reader;

-- ade_schedule() takes over no function someone else made
CREATE OR REPLACE FUNCTION ade_schedule(schedule text DEFAULT '* * * * *') RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	jid bigint;
	v_fn regprocedure;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
		RAISE EXCEPTION 'pg_cron is not installed in this database'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, restart, then CREATE EXTENSION pg_cron.';
	END IF;
	EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO jid
		USING 'ade_sync', schedule, format('SELECT %I.ade_sync()', '@extschema@');

	-- The cleanup function is made here, outside the extension (an event
	-- trigger of the extension's own would not fire when it is dropped).
	-- A role with CREATE on the schema could have made one of that name
	-- first, to run its body as whoever next drops anything: one that
	-- belongs to neither the extension's owner nor a superuser is refused,
	-- never taken over.
	v_fn := to_regprocedure(format('%I.ade_cron_cleanup()', '@extschema@'));
	IF v_fn IS NOT NULL AND NOT EXISTS (
		SELECT 1 FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
		 WHERE p.oid = v_fn
		   AND (r.rolsuper OR p.proowner = (SELECT e.extowner FROM pg_extension e WHERE e.extname = 'ade')))
	THEN
		RAISE EXCEPTION 'function %.ade_cron_cleanup() exists and belongs to %, not to the extension''s owner',
			'@extschema@', (SELECT p.proowner::regrole FROM pg_proc p WHERE p.oid = v_fn)
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'A role with CREATE on the schema made it; ade_schedule() does not take it over. Check it, drop it, and call ade_schedule() again.';
	END IF;
	EXECUTE format($f$
		CREATE %s FUNCTION %I.ade_cron_cleanup() RETURNS event_trigger
		LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $body$
		BEGIN
			IF EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects()
						WHERE object_type = 'extension' AND object_identity = 'ade') THEN
				PERFORM cron.unschedule(j.jobid) FROM cron.job j WHERE j.jobname = 'ade_sync';
				DROP EVENT TRIGGER ade_cron_cleanup;
				DROP FUNCTION %I.ade_cron_cleanup();
			END IF;
		END
		$body$ $f$, CASE WHEN v_fn IS NULL THEN '' ELSE 'OR REPLACE' END, '@extschema@', '@extschema@');
	EXECUTE format('REVOKE ALL ON FUNCTION %I.ade_cron_cleanup() FROM PUBLIC', '@extschema@');
	IF NOT EXISTS (SELECT 1 FROM pg_event_trigger
					WHERE evtname = 'ade_cron_cleanup'
					  AND evtfoid = to_regprocedure(format('%I.ade_cron_cleanup()', '@extschema@'))) THEN
		IF EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'ade_cron_cleanup') THEN
			EXECUTE 'DROP EVENT TRIGGER ade_cron_cleanup';
		END IF;
		EXECUTE format('CREATE EVENT TRIGGER ade_cron_cleanup ON sql_drop EXECUTE FUNCTION %I.ade_cron_cleanup()',
					   '@extschema@');
	END IF;
	RETURN jid;
END
$$;
COMMENT ON FUNCTION ade_schedule(text) IS
	'registers the pg_cron job ade_sync (SELECT ade_sync(), every minute by default); idempotent';

-- a trigger's WHEN is parsed with the search_path of the script: qualified
CREATE OR REPLACE TRIGGER ade_team_moves AFTER UPDATE OF team_id ON hosts
	FOR EACH ROW WHEN (NOT coalesce(OLD.team_id OPERATOR(pg_catalog.=) NEW.team_id,
									OLD.team_id IS NULL AND NEW.team_id IS NULL))
	EXECUTE FUNCTION ade_hosts_team_moved();


-- the status views: fully qualified, calling nothing ade_reader may not,
-- and counting the records kept aside

CREATE OR REPLACE VIEW ade_team_status AS
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


-- a removed token's devices go to another token's tied records, and its
-- kept records go with it
CREATE FUNCTION ade_token_row(p_consumer_key text, p_renew_at timestamptz) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id bigint;
	r record;
	v_lost bigint;
	v_back bigint;
	v_note int;
BEGIN
	UPDATE @extschema@.abm_tokens t
	   SET renew_at = p_renew_at, token_invalid = false, terms_expired = false, updated_at = now()
	 WHERE t.consumer_key = p_consumer_key
	RETURNING t.id INTO v_id;
	IF FOUND THEN
		RETURN v_id;
	END IF;
	DELETE FROM @extschema@.ade_removed_tokens x WHERE x.consumer_key = p_consumer_key
	RETURNING x.* INTO r;
	IF NOT FOUND THEN
		INSERT INTO @extschema@.abm_tokens AS t (consumer_key, renew_at) VALUES (p_consumer_key, p_renew_at)
		ON CONFLICT (consumer_key) DO UPDATE
		   SET renew_at = excluded.renew_at, token_invalid = false, terms_expired = false, updated_at = now()
		RETURNING t.id INTO v_id;
		RETURN v_id;
	END IF;

	-- the hosts its devices come back on, locked against a delete (an
	-- application's, the TRUNCATE of hosts) until this commits: one that
	-- committed first has lost its host, one that comes later finds the
	-- device live and keeps the host (ade_hosts_after_delete()).  Key
	-- share: updates of other columns (the sync's, an application's) go
	-- on; in id order, the order of a bulk DELETE of hosts.
	PERFORM 1
	   FROM @extschema@.host_dep_assignments d
	   JOIN @extschema@.hosts h ON h.id = d.host_id AND h.hardware_serial = d.hardware_serial
	  WHERE d.abm_token_id = r.id AND d.deleted_at = r.removed_at
	  ORDER BY h.id
	    FOR KEY SHARE OF h;
	SELECT count(*) INTO v_lost
	  FROM @extschema@.host_dep_assignments d
	  LEFT JOIN @extschema@.hosts h ON h.id = d.host_id AND h.hardware_serial = d.hardware_serial
	 WHERE d.abm_token_id = r.id AND d.deleted_at = r.removed_at AND h.id IS NULL;
	-- its records that waited for another token's delete went with it: what
	-- they said comes again only with a full fetch; so does everything of a
	-- token that had no cursor yet, or that was removed again before the
	-- cursor of an earlier restore answered (what that restore revived is
	-- not known to be ABM's)
	v_lost := v_lost + coalesce((r.settings->>'tied')::bigint, 0)
			  + CASE WHEN r.cursor IS NULL THEN 1 ELSE 0 END
			  + CASE WHEN r.settings->>'restored_at' IS NOT NULL THEN 1 ELSE 0 END;
	INSERT INTO @extschema@.abm_tokens (id, consumer_key, renew_at, mode, cursor, fetch_started_at,
		fetched_until, last_sync_at, assign_profiles, macos_team_id, ios_team_id,
		ipados_team_id, assign_not_before, restored_at)
	SELECT r.id, p_consumer_key, p_renew_at,
		   CASE WHEN v_lost = 0 THEN r.mode ELSE 'fetch' END,
		   CASE WHEN v_lost = 0 THEN r.cursor END,
		   CASE WHEN v_lost = 0 THEN r.fetch_started_at END,
		   r.fetched_until,
		   -- not its last error: the file added back may be what fixes it
		   (r.settings->>'last_sync_at')::timestamptz,
		   coalesce((r.settings->>'assign_profiles')::boolean, true),
		   (SELECT tm.id FROM @extschema@.teams tm WHERE tm.id = (r.settings->>'macos_team_id')::bigint),
		   (SELECT tm.id FROM @extschema@.teams tm WHERE tm.id = (r.settings->>'ios_team_id')::bigint),
		   (SELECT tm.id FROM @extschema@.teams tm WHERE tm.id = (r.settings->>'ipados_team_id')::bigint),
		   (r.settings->>'assign_not_before')::timestamptz,
		   -- the devices come back on the word of the cursor: until a page
		   -- of it answers, a full fetch (an expired cursor) soft-deletes
		   -- again those it does not list (ade_apply_page())
		   CASE WHEN v_lost = 0 THEN now() END;
	INSERT INTO @extschema@.ade_profiles (token_id, platform, team_id, profile)
	SELECT r.id, p->>'platform', NULL, p->'profile'
	  FROM jsonb_array_elements(coalesce(r.settings->'profiles', '[]')) p;
	-- what ABM refused is sent again: it may have been fixed meanwhile
	INSERT INTO @extschema@.ade_profile_definitions (token_id, profile_key, profile_uuid, defined_at)
	SELECT r.id, p->>'profile_key', p->>'profile_uuid', (p->>'defined_at')::timestamptz
	  FROM jsonb_array_elements(coalesce(r.settings->'definitions', '[]')) p
	 WHERE p->>'refusal' IS NULL;
	IF v_lost > 0 THEN
		-- no cursor: the full fetch brings back what ABM still gives the
		-- token (on the same hosts, found by serial), and nothing it no
		-- longer does
		RAISE NOTICE 'abm token % is back in place; its devices come back with the next sync, which fetches them all again', r.id
			USING DETAIL = 'Some of its devices lost their host meanwhile, records it held for other tokens went with it, it had no cursor yet, or the cursor of its last restore never answered.';
		RETURN r.id;
	END IF;
	-- the cursor goes on: the devices the removal soft-deleted come back
	-- live, on their hosts, and the cursor brings what changed since.
	-- updated_at stays the removal's: a full fetch that follows (the
	-- cursor expired) tells what it did not list by it, even in this
	-- transaction (ade_apply_page())
	WITH back AS (
		UPDATE @extschema@.host_dep_assignments d
		   SET deleted_at = NULL
		  FROM @extschema@.hosts h
		 WHERE d.abm_token_id = r.id AND d.deleted_at = r.removed_at
		   AND h.id = d.host_id AND h.hardware_serial = d.hardware_serial
		RETURNING d.host_id, d.hardware_serial)
	SELECT count(*), @extschema@.ade_notify_hosts(array_agg('added'::text), array_agg(b.host_id),
												 array_agg(b.hardware_serial), array_agg(r.id))
	  INTO v_back, v_note
	  FROM back b;
	RAISE NOTICE 'abm token % is back in place: % devices live again, the next sync goes on from its cursor', r.id, v_back;
	RETURN r.id;
END
$$;
COMMENT ON FUNCTION ade_token_row(text, timestamptz) IS
	'internal: the abm_tokens row of a token being added: renewed, restored after ade_remove_token(), or new';

CREATE OR REPLACE FUNCTION ade_remove_token(token_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t record;
	v_freed text[];
	v_n bigint;
	-- not now(): a sync earlier in the same transaction soft-deleted its
	-- devices at now(), and those must not come back with the token
	v_at timestamptz := clock_timestamp();
	v_note int;
BEGIN
	IF token_id IS NULL THEN
		RAISE EXCEPTION 'token_id is null' USING ERRCODE = 'null_value_not_allowed',
			HINT = 'SELECT id, org_name FROM abm_tokens lists the tokens.';
	END IF;
	SELECT * INTO t FROM @extschema@.abm_tokens x WHERE x.id = ade_remove_token.token_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'abm token % does not exist', ade_remove_token.token_id
			USING ERRCODE = 'no_data_found',
				  HINT = 'SELECT id, org_name FROM abm_tokens lists the tokens.';
	END IF;
	WITH gone AS (
		UPDATE @extschema@.host_dep_assignments d
		   SET deleted_at = v_at, needs_assign = false, updated_at = now()
		 WHERE d.abm_token_id = t.id AND d.deleted_at IS NULL
		RETURNING d.host_id, d.hardware_serial)
	SELECT array_agg(g.hardware_serial),
		   @extschema@.ade_notify_hosts(array_agg('deleted'::text), array_agg(g.host_id),
									   array_agg(g.hardware_serial), array_agg(t.id))
	  INTO v_freed, v_note
	  FROM gone g;
	v_n := coalesce(cardinality(v_freed), 0);
	INSERT INTO @extschema@.ade_removed_tokens AS x
		(id, consumer_key, mode, cursor, fetch_started_at, fetched_until, removed_at, devices, settings)
	VALUES (t.id, t.consumer_key, t.mode, t.cursor, t.fetch_started_at, t.fetched_until, v_at, v_n,
			jsonb_build_object(
				'assign_profiles', t.assign_profiles,
				'assign_not_before', t.assign_not_before,
				'last_sync_at', t.last_sync_at, 'restored_at', t.restored_at,
				'tied', (SELECT count(*) FROM @extschema@.ade_tied_records x WHERE x.token_id = t.id),
				'macos_team_id', t.macos_team_id, 'ios_team_id', t.ios_team_id,
				'ipados_team_id', t.ipados_team_id,
				'profiles', (SELECT coalesce(jsonb_agg(jsonb_build_object('platform', p.platform, 'profile', p.profile)), '[]')
							   FROM @extschema@.ade_profiles p WHERE p.token_id = t.id),
				'definitions', (SELECT coalesce(jsonb_agg(to_jsonb(d) - 'token_id'), '[]')
								  FROM @extschema@.ade_profile_definitions d WHERE d.token_id = t.id)))
	ON CONFLICT (consumer_key) DO UPDATE
	   SET id = excluded.id, mode = excluded.mode, cursor = excluded.cursor,
		   fetch_started_at = excluded.fetch_started_at, fetched_until = excluded.fetched_until,
		   removed_at = excluded.removed_at, devices = excluded.devices, settings = excluded.settings;
	-- its secrets, session, profiles and definitions go with the row (foreign keys)
	DELETE FROM @extschema@.abm_tokens x WHERE x.id = t.id;
	-- a device another token's record of the same second claims goes there
	IF v_freed IS NOT NULL THEN
		PERFORM @extschema@.ade_release_tied(v_freed);
	END IF;
	RAISE NOTICE 'abm token % (%) removed: % live devices soft-deleted', t.id, coalesce(t.org_name, t.consumer_key), v_n
		USING HINT = 'Adding the same token back with ade_add_token() restores it in place: the same id, its cursor, settings and these devices.';
END
$$;
COMMENT ON FUNCTION ade_remove_token(bigint) IS
	'removes a token: its secrets and session are deleted, its live devices soft-deleted; adding it back restores it in place';


REVOKE ALL ON FUNCTION ade_device_profiles(bigint), ade_assign_candidates(bigint),
	ade_batch_unanswered(bigint, text[], int),
	ade_apply_records(bigint, jsonb, boolean, timestamptz), ade_apply_devices(bigint, jsonb, boolean, timestamptz),
	ade_retry_rejected(bigint, timestamptz), ade_release_tied(text[]), ade_record_op_date(jsonb, timestamptz),
	ade_hosts_id_past(), ade_restore_hosts(bigint[], text[], text[], bigint[]),
	ade_hosts_after_delete(), ade_hosts_before_truncate(), ade_hosts_after_truncate(),
	ade_hosts_reserialed(), ade_hosts_renumbered(), ade_apply_halves(bigint, jsonb, boolean, timestamptz) FROM PUBLIC;

-- ---------------------------------------------------------------------
-- What a first-time admin hits (issue 14)
-- ---------------------------------------------------------------------

-- a token removed and added back comes back in place
CREATE TABLE ade_removed_tokens (
	id				bigint PRIMARY KEY,	-- abm_tokens.id it had
	consumer_key	text NOT NULL UNIQUE,
	mode			text NOT NULL,
	cursor			text,
	fetch_started_at timestamptz,
	fetched_until	timestamptz,
	removed_at		timestamptz NOT NULL,
	devices			bigint NOT NULL,	-- live devices the removal soft-deleted
	-- what else was the token's: assign_profiles, default teams, its own
	-- profiles, and the profile_uuid Apple gave each of its profiles (so
	-- that no device is assigned again for nothing)
	settings		jsonb NOT NULL
);
COMMENT ON TABLE ade_removed_tokens IS 'tokens removed with ade_remove_token(): adding the same token back restores its id, cursor and devices';

SELECT pg_catalog.pg_extension_config_dump('ade_removed_tokens', '');
REVOKE ALL ON ade_removed_tokens FROM PUBLIC;
ALTER FUNCTION ade_add_token(bytea) CALLED ON NULL INPUT;
ALTER FUNCTION ade_refresh_account(bigint) CALLED ON NULL INPUT;
ALTER FUNCTION ade_sync(bigint) CALLED ON NULL INPUT;
REVOKE ALL ON FUNCTION ade_token_row(text, timestamptz) FROM PUBLIC;

-- a profile ABM refused is kept as refused, with ABM's words
ALTER TABLE ade_profile_definitions ALTER COLUMN profile_uuid DROP NOT NULL,
	ADD COLUMN refusal text,
	ADD CHECK ((profile_uuid IS NULL) <> (refusal IS NULL));
COMMENT ON TABLE ade_profile_definitions IS 'the profile_uuid Apple gave each (profile, token)';

-- profiles checked as Apple takes them; a scope passed as NULL is an error
CREATE FUNCTION ade_url_refusal(url text) RETURNS text
	AS 'MODULE_PATHNAME', 'ade_url_refusal' LANGUAGE C STRICT STABLE PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_url_refusal(text) IS
	'internal: why a URL is not one ade would use (https, or http to a loopback host), or null';

CREATE FUNCTION ade_is_der_certificate(der bytea) RETURNS boolean
	AS 'MODULE_PATHNAME', 'ade_is_der_certificate' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_is_der_certificate(bytea) IS
	'internal: whether the bytes are one X.509 certificate in DER';

CREATE FUNCTION ade_check_profile(p_profile jsonb) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	k text;
	v jsonb;
	e jsonb;
	why text;
	der bytea;
	bools constant text[] := ARRAY['allow_pairing', 'is_supervised', 'is_multi_user', 'is_mandatory',
		'await_device_configured', 'is_mdm_removable', 'auto_advance_setup'];
	strs constant text[] := ARRAY['profile_name', 'url', 'support_phone_number', 'support_email_address',
		'org_magic', 'department', 'language', 'region', 'configuration_web_url'];
	arrs constant text[] := ARRAY['anchor_certs', 'supervising_host_certs', 'skip_setup_items'];
	-- Apple's SkipKeys (device-management, other/skipkeys.yaml)
	skips constant text[] := ARRAY['Accessibility', 'ActionButton', 'AdditionalPrivacySettings', 'Android',
		'Appearance', 'AppleID', 'AppStore', 'Biometric', 'CameraButton', 'DeviceToDeviceMigration',
		'Diagnostics', 'DisplayTone', 'EnableLockdownMode', 'FileVault', 'HomeButtonSensitivity',
		'iCloudDiagnostics', 'iCloudStorage', 'iMessageAndFaceTime', 'Intelligence', 'Keyboard', 'Location',
		'MessagingActivationUsingPhoneNumber', 'Multitasking', 'OnBoarding', 'OSShowcase', 'Passcode',
		'Payment', 'Privacy', 'Restore', 'RestoreCompleted', 'Safety', 'SafetyAndHandling', 'ScreenSaver',
		'ScreenTime', 'SIMSetup', 'Siri', 'SoftwareUpdate', 'SpokenLanguage', 'TapToSetup',
		'TermsOfAddress', 'Tips', 'TOS', 'TVHomeScreenSync', 'TVProviderSignIn', 'TVRoom',
		'UnlockWithWatch', 'UpdateCompleted', 'Wallpaper', 'WatchMigration', 'WebContentFiltering',
		'Welcome', 'Zoom'];
BEGIN
	IF jsonb_typeof(p_profile) <> 'object' THEN
		RAISE EXCEPTION 'the profile must be a JSON object, not %', jsonb_typeof(p_profile)
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF p_profile ? 'devices' THEN
		RAISE EXCEPTION 'a profile may not name its own "devices"'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Apple would assign it to those serials at once, whatever their scope; ade assigns each device the profile of its scope.',
				  HINT = 'Remove "devices"; set the profile for the team, token or platform those devices are in.';
	END IF;
	FOR k, v IN SELECT j.key, j.value FROM jsonb_each(p_profile) j LOOP
		IF k = ANY (bools) THEN
			IF jsonb_typeof(v) <> 'boolean' THEN
				RAISE EXCEPTION 'profile key "%" must be true or false, not %', k, v::text
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
		ELSIF k = ANY (strs) THEN
			IF jsonb_typeof(v) <> 'string' THEN
				RAISE EXCEPTION 'profile key "%" must be a string, not %', k, v::text
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
		ELSIF k = ANY (arrs) THEN
			IF jsonb_typeof(v) <> 'array'
			   OR EXISTS (SELECT 1 FROM jsonb_array_elements(v) x WHERE jsonb_typeof(x) <> 'string') THEN
				RAISE EXCEPTION 'profile key "%" must be an array of strings, not %', k, v::text
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
		ELSE
			RAISE WARNING 'the profile has a key Apple does not define: "%"', k
				USING HINT = 'It is sent to Apple as it is; ABM may refuse the profile.';
		END IF;
	END LOOP;
	IF coalesce(p_profile->>'profile_name', '') = '' THEN
		RAISE EXCEPTION 'the profile has no "profile_name"'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Apple requires profile_name and url in every profile.';
	END IF;
	IF coalesce(p_profile->>'url', '') = '' THEN
		RAISE EXCEPTION 'the profile has no "url"'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Apple requires profile_name and url in every profile.';
	END IF;
	FOREACH k IN ARRAY ARRAY['url', 'configuration_web_url'] LOOP
		why := @extschema@.ade_url_refusal(p_profile->>k);
		IF p_profile ? k AND why IS NOT NULL THEN
			RAISE EXCEPTION 'the profile''s % "%" cannot be used: %', k, p_profile->>k, why
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Devices need an absolute https URL of the MDM server (http only for a loopback test server).';
		END IF;
	END LOOP;
	FOR e IN SELECT x FROM jsonb_array_elements(coalesce(p_profile->'skip_setup_items', '[]')) x LOOP
		IF NOT (e->>0) = ANY (skips) THEN
			RAISE EXCEPTION 'skip_setup_items has "%", which is not a Setup Assistant pane Apple knows', e->>0
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Known panes: ' || array_to_string(skips, ', ') || '.';
		END IF;
	END LOOP;
	FOREACH k IN ARRAY ARRAY['anchor_certs', 'supervising_host_certs'] LOOP
		FOR e IN SELECT x FROM jsonb_array_elements(coalesce(p_profile->k, '[]')) x LOOP
			BEGIN
				der := decode(e->>0, 'base64');
			EXCEPTION WHEN invalid_parameter_value THEN
				der := NULL;
			END;
			IF der IS NULL OR NOT @extschema@.ade_is_der_certificate(der) THEN
				RAISE EXCEPTION 'an entry of % is not a base64 DER certificate', k
					USING ERRCODE = 'invalid_parameter_value',
						  HINT = 'Give each certificate as base64 of its DER form, e.g. openssl x509 -in ca.pem -outform DER | base64 -w0.';
			END IF;
		END LOOP;
	END LOOP;
	IF p_profile ? 'language' AND p_profile->>'language' !~ '^[a-z]{2,3}$' THEN
		RAISE EXCEPTION 'the profile''s language "%" is not an ISO 639 code', p_profile->>'language'
			USING ERRCODE = 'invalid_parameter_value', HINT = 'For example "en" or "de".';
	END IF;
	IF p_profile ? 'region' AND p_profile->>'region' !~ '^[A-Z]{2}$' THEN
		RAISE EXCEPTION 'the profile''s region "%" is not an ISO 3166 code', p_profile->>'region'
			USING ERRCODE = 'invalid_parameter_value', HINT = 'For example "US" or "DE".';
	END IF;
END
$$;
COMMENT ON FUNCTION ade_check_profile(jsonb) IS
	'raises an error when a profile is not one Apple''s POST /profile takes; a WARNING for a key Apple does not define';

CREATE OR REPLACE FUNCTION ade_set_profile(profile jsonb, token_id bigint DEFAULT 0,
	platform text DEFAULT 'any', team_id bigint DEFAULT 0) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_token bigint;
	v_platform text;
	v_team bigint;
BEGIN
	IF token_id IS NULL OR platform IS NULL OR team_id IS NULL THEN
		RAISE EXCEPTION '% is NULL: a scope argument passed as NULL never means "any"',
			CASE WHEN token_id IS NULL THEN 'token_id' WHEN platform IS NULL THEN 'platform' ELSE 'team_id' END
			USING ERRCODE = 'null_value_not_allowed',
				  DETAIL = 'A NULL usually comes from a lookup that found nothing (a misspelt name, say).',
				  HINT = 'Omit the argument for "any" (or pass 0, or ''any'' for platform); SELECT id, org_name FROM abm_tokens and SELECT id, name FROM teams list what exists.';
	END IF;
	v_token := nullif(token_id, 0);
	v_platform := nullif(platform, 'any');
	v_team := nullif(team_id, 0);
	IF v_team IS NOT NULL THEN
		IF v_token IS NOT NULL OR v_platform IS NOT NULL THEN
			RAISE EXCEPTION 'a team profile applies to every token and platform of the team'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Call ade_set_profile(profile, team_id => ...) alone.';
		END IF;
		IF NOT EXISTS (SELECT 1 FROM @extschema@.teams tm WHERE tm.id = v_team) THEN
			RAISE EXCEPTION 'team % does not exist', v_team USING ERRCODE = 'no_data_found',
				HINT = 'SELECT id, name FROM teams lists the teams.';
		END IF;
	END IF;
	IF v_platform IS NOT NULL AND v_platform NOT IN ('darwin', 'ios', 'ipados', 'tvos', 'visionos') THEN
		RAISE EXCEPTION 'unknown platform "%"', v_platform
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use darwin, ios, ipados, tvos or visionos (or omit it for any).';
	END IF;
	IF v_token IS NOT NULL AND NOT EXISTS (SELECT 1 FROM @extschema@.abm_tokens t WHERE t.id = v_token) THEN
		RAISE EXCEPTION 'abm token % does not exist', v_token USING ERRCODE = 'no_data_found',
			HINT = 'SELECT id, org_name FROM abm_tokens lists the tokens.';
	END IF;
	IF profile IS NULL THEN
		DELETE FROM @extschema@.ade_profiles x
		 WHERE x.token_id IS NOT DISTINCT FROM v_token
		   AND x.platform IS NOT DISTINCT FROM v_platform
		   AND x.team_id IS NOT DISTINCT FROM v_team;
		RETURN;
	END IF;
	PERFORM @extschema@.ade_check_profile(profile);
	INSERT INTO @extschema@.ade_profiles AS x (token_id, platform, team_id, profile)
	VALUES (v_token, v_platform, v_team, ade_set_profile.profile)
	ON CONFLICT ON CONSTRAINT ade_profiles_scope
	DO UPDATE SET profile = excluded.profile, updated_at = now();
	-- a profile ABM refused, set again: the next sync sends it again
	DELETE FROM @extschema@.ade_profile_definitions d
	 WHERE d.profile_key = md5(ade_set_profile.profile::text) AND d.refusal IS NOT NULL;
END
$$;
COMMENT ON FUNCTION ade_set_profile(jsonb, bigint, text, bigint) IS
	'sets (or with null clears) the enrollment profile of a scope; an omitted scope argument means any, a NULL one is an error';

CREATE FUNCTION ade_profile_problem(p_token bigint) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT format('ABM refused the enrollment profile "%s" (%s): its devices wait; fix it with %s; unchanged, it is sent again after ade.failed_retry_interval',
				  m.profile->>'profile_name', d.refusal,
				  CASE WHEN m.profile->>'url' = coalesce(current_setting('ade.enroll_url', true), '')
							AND NOT EXISTS (SELECT 1 FROM @extschema@.ade_profiles x WHERE x.profile = m.profile)
					   THEN 'ade.enroll_url' ELSE 'ade_set_profile() (the next sync sends what is set)' END)
	  FROM @extschema@.ade_profile_definitions d
	  JOIN @extschema@.ade_device_profiles(p_token) m ON m.profile_key = d.profile_key
	 WHERE d.token_id = p_token AND d.refusal IS NOT NULL
	 ORDER BY d.defined_at
	 LIMIT 1
$$;
COMMENT ON FUNCTION ade_profile_problem(bigint) IS
	'internal: the first profile of the token that ABM refused, in words, or null';

REVOKE ALL ON FUNCTION ade_check_profile(jsonb), ade_profile_problem(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ade_profile_problem(bigint) TO ade_reader;

-- the status names a refused profile
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
		 WHEN k.problem IS NOT NULL THEN k.problem
		 WHEN t.token_invalid THEN 'Apple rejects the token: download a new one from ABM and call ade_add_token()'
		 WHEN t.terms_expired THEN 'terms not accepted: an ABM administrator must sign in and accept them'
		 WHEN t.renew_at OPERATOR(pg_catalog.<) pg_catalog.now() THEN 'the token has expired: renew it in ABM and call ade_add_token()'
		 WHEN t.last_error IS NOT NULL THEN 'the last sync failed: ' OPERATOR(pg_catalog.||) t.last_error
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
	   r.rejected
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
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL AND d.assign_profile_response OPERATOR(pg_catalog.=) 'NOT_ACCESSIBLE') AS not_accessible
	  FROM @extschema@.host_dep_assignments d
	  LEFT JOIN @extschema@.hosts h ON h.id OPERATOR(pg_catalog.=) d.host_id
	 WHERE d.abm_token_id OPERATOR(pg_catalog.=) t.id
  ) a ON true
  CROSS JOIN LATERAL (
	SELECT pg_catalog.count(*) AS rejected
	  FROM @extschema@.ade_rejected_records x
	 WHERE x.token_id OPERATOR(pg_catalog.=) t.id
  ) r
  CROSS JOIN (SELECT @extschema@.ade_secret_status() AS problem) k;
COMMENT ON VIEW ade_status IS 'one row per ABM token: its state and device counts, no secret';

-- a NULL token (a lookup that found nothing) is an error that says so
CREATE OR REPLACE FUNCTION ade_set_default_teams(token_id bigint, macos bigint, ios bigint, ipados bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF token_id IS NULL THEN
		RAISE EXCEPTION 'token_id is null' USING ERRCODE = 'null_value_not_allowed',
			HINT = 'SELECT id, org_name FROM abm_tokens lists the tokens.';
	END IF;
	UPDATE @extschema@.abm_tokens t
	   SET macos_team_id = macos, ios_team_id = ios, ipados_team_id = ipados, updated_at = now()
	 WHERE t.id = ade_set_default_teams.token_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'abm token % does not exist', token_id USING ERRCODE = 'no_data_found',
			HINT = 'SELECT id, org_name FROM abm_tokens lists the tokens.';
	END IF;
END
$$;

-- replaced by ade_device_profiles() (the view no longer uses it)
DROP FUNCTION ade_effective_profiles(bigint);

-- profiles stored by 0.3 were not checked as Apple takes them: each one
-- that would fail now is named (it is left as it is)
DO $$
DECLARE
	r record;
BEGIN
	FOR r IN SELECT x.id, x.token_id, x.platform, x.team_id, x.profile FROM ade_profiles x ORDER BY x.id LOOP
		BEGIN
			PERFORM ade_check_profile(r.profile);
		EXCEPTION WHEN invalid_parameter_value THEN
			RAISE WARNING 'the stored profile "%" (token %, platform %, team %) is one Apple would refuse: %',
				r.profile->>'profile_name', coalesce(r.token_id::text, 'any'), coalesce(r.platform, 'any'),
				coalesce(r.team_id::text, 'none'), SQLERRM
				USING HINT = 'Fix it with ade_set_profile().';
		END;
	END LOOP;
END
$$;

-- 0.3 put hosts back with their ids without moving the sequence
-- (TRUNCATE hosts RESTART IDENTITY): past every id in use now
SELECT ade_hosts_id_past();

-- the secrets of 0.3 (a key file each, no associated data), re-sealed with
-- a data key and bound to their place; one whose key file is gone stays as
-- it is, with a WARNING
SELECT ade_vault_upgrade();
