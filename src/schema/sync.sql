/*-------------------------------------------------------------------------
 *
 * sync.sql
 *		Source of the ade install script: the row work of ade_sync().
 *
 * Owns what one ABM page does to the tables (sync rules 4 to 8 of the
 * spec, and the token's cursor and mode, in one statement of src/sync.c:
 * ade_apply_page()), the records that cannot be applied
 * (ade_rejected_records: kept with the reason, tried again, never dropped
 * and never stopping their token; a failing page goes in halves down to
 * the record at fault), records of the same second as another token's live
 * device (ade_tied_records: they apply when that token lets go, by its
 * delete, its removal, or a full fetch that no longer lists the device),
 * the platform of a device family
 * (rule 8), the end of a token's run (its state and its ade_sync_runs
 * row), the run history for readers, and the declarations of ade_sync().
 * src/sync.c moves pages from HTTP to ade_apply_page() and owns the order
 * of work, the time budget and the transactions; the profile a device
 * should have comes from ade_device_profiles() (profiles.sql).
 *
 * Set-based by design: a page of up to 1000 records is one statement over
 * jsonb_array_elements (ade_apply_records()), with one index probe per
 * record (LATERAL ... OFFSET 0, so that no plan hashes a whole table) and
 * a custom plan per page (a generic plan made on empty tables would scan
 * them whole).  Only when that statement fails because of a record does
 * the page go one record at a time, to keep the others.
 *
 * IDENTIFICATION
 *	  src/schema/sync.sql
 *
 *-------------------------------------------------------------------------
 */

CREATE FUNCTION ade_sync(OUT token_id bigint, OUT org_name text, OUT mode text,
	OUT pages int, OUT added int, OUT modified int, OUT deleted int,
	OUT assigned int, OUT failed int, OUT error text)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'ade_sync_all' LANGUAGE C VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_sync() IS 'syncs every ABM token once; one row per token';

CREATE FUNCTION ade_sync(token_id bigint, OUT token_id bigint, OUT org_name text,
	OUT mode text, OUT pages int, OUT added int, OUT modified int, OUT deleted int,
	OUT assigned int, OUT failed int, OUT error text)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'ade_sync_one' LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_sync(bigint) IS 'syncs one ABM token';

-- The run pg_cron makes (ade_schedule()): the same as ade_sync(), but each
-- page and each assignment batch commits as soon as it is applied, so that
-- the application's statements on hosts wait for one page at most
-- (src/coexist.c); ade_sync_runs has what it did.  In a transaction block
-- it cannot commit, and is one transaction like ade_sync().  (No SET
-- clause: a procedure that has one cannot commit; the C code qualifies
-- every name, and each SQL function it calls pins its search_path.)
CREATE PROCEDURE ade_sync_job()
	AS 'MODULE_PATHNAME', 'ade_sync_job' LANGUAGE C;
COMMENT ON PROCEDURE ade_sync_job() IS
	'syncs every ABM token, committing each page: what pg_cron runs';
CREATE PROCEDURE ade_sync_job(token_id bigint)
	AS 'MODULE_PATHNAME', 'ade_sync_job' LANGUAGE C;
COMMENT ON PROCEDURE ade_sync_job(bigint) IS
	'syncs one ABM token, committing each page';

-- Sync rule 8: platform from ABM's device_family (NULL when ABM sent none).
CREATE FUNCTION ade_platform(device_family text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT CASE
		WHEN device_family IS NULL THEN NULL
		WHEN device_family OPERATOR(pg_catalog.=) ANY (ARRAY['iPhone', 'iPod']) THEN 'ios'
		WHEN device_family OPERATOR(pg_catalog.=) 'iPad' THEN 'ipados'
		WHEN device_family OPERATOR(pg_catalog.=) 'AppleTV' THEN 'tvos'
		WHEN device_family OPERATOR(pg_catalog.=) 'Vision' THEN 'visionos'
		ELSE 'darwin'
	END
$$;
COMMENT ON FUNCTION ade_platform(text) IS 'hosts.platform of an ABM device_family: iPhone/iPod ios, iPad ipados, AppleTV tvos, Vision visionos, else darwin';

-- Is this error one of a device record (bad data, a constraint, a trigger
-- of the application's that refuses it), so that the record is kept aside
-- and the rest goes on?  Anything else (a deadlock, a lack of resources, a
-- cancel, an internal error) is the run's, and fails the page as a whole.
CREATE FUNCTION ade_record_error(p_sqlstate text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT pg_catalog.left(p_sqlstate, 2) OPERATOR(pg_catalog.=)
		   ANY (ARRAY['22', '23', '2F', '38', '39', '44', '54', 'P0'])
	   AND p_sqlstate OPERATOR(pg_catalog.<>) 'P0004'
$$;
COMMENT ON FUNCTION ade_record_error(text) IS
	'internal: whether an error is a device record''s (kept aside) rather than the run''s';

-- Device records of a page, applied in one statement: sync rules 4 to 8.
--   p_fetch: the records came from a full fetch (every record counts as added)
--   p_as_of: the page's fetched_until: a fetched record, which has no op_date,
--     tells what ABM held then (an older record of another token does not
--     take the device from it)
-- A record without a serial cannot be applied: it is kept in
-- ade_rejected_records.  A record that is news to what
-- ade_rejected_records keeps of its serial replaces it.  A record of the
-- same second as the last one of the device, which another token holds
-- live, waits in ade_tied_records for that token's delete.
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
		-- A device pinned to a profile of its own (devices.sql) is judged
		-- by its pin; a held one is never due.
		SELECT p.*, CASE WHEN pn.hardware_serial IS NOT NULL THEN pn.profile_uuid ELSE m.profile_uuid END AS ours,
			   coalesce(p.held = CASE WHEN pn.hardware_serial IS NOT NULL THEN pn.profile_uuid
									  ELSE m.profile_uuid END, false) AS has_ours,
			   coalesce(pn.hold, false) AS hold
		  FROM plan1 p
		  LEFT JOIN @extschema@.ade_device_profiles(p_token) m
			ON m.team_id = coalesce(p.team_id, 0) AND m.platform = p.platform
		  LEFT JOIN LATERAL (SELECT y.hardware_serial, y.profile IS NULL AS hold, x.profile_uuid
							   FROM @extschema@.ade_device_pins y
							   LEFT JOIN @extschema@.ade_profile_definitions x
								 ON x.token_id = p_token AND x.profile_key = md5(y.profile::text)
							  WHERE y.hardware_serial = p.serial OFFSET 0) pn ON true
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
			 needs_assign, profile_uuid, assign_profile_response, retry_at, updated_at,
			 mdm_migration_deadline, listed_at)
		SELECT coalesce(u.id, p.host_id), p.serial, p_token, now(), p.rec, p.op_date,
			   NOT p.has_ours AND NOT p.hold, p.held,
			   CASE WHEN p.has_ours THEN 'SUCCESS' END,
			   -- a marker for DO UPDATE: keep the cooldown (FAILED,
			   -- THROTTLED) of a device that stays with this token: a
			   -- modification, or a full fetch listing it again (a new row
			   -- never has one); being added or moved, or any news of a
			   -- device that was NOT_ACCESSIBLE, ends it
			   CASE WHEN (p.act = 'modified' OR (p_fetch AND p.prev_live AND p.prev_token = p_token))
						 AND p.response IS DISTINCT FROM 'NOT_ACCESSIBLE'
					THEN 'infinity'::timestamptz END,
			   now(), @extschema@.ade_migration_deadline(p.rec),
			   -- ABM said now that the device is the token's (a reconcile
			   -- counts it listed; the clock's time, see ade_apply_reconcile_page())
			   clock_timestamp()
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
			   deleted_reason = NULL,
			   device = excluded.device,
			   mdm_migration_deadline = excluded.mdm_migration_deadline,
			   listed_at = excluded.listed_at,
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
		   SET deleted_at = now(), deleted_reason = 'deleted', needs_assign = false,
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

-- Devices their holder let go (its delete, or the token removed): each
-- goes to the token of its latest tied record, if any (the device moved
-- within one second).  A tied record older than the release is moot: the
-- holder's record that made it so removed it already.
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

-- The op_date of a record as ade_apply_records() reads it, or NULL when it
-- is not a date (for a record kept aside).
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

-- Records that failed as one statement, in halves: each half in one
-- statement (its own subtransaction), a half that fails because of a
-- record split again, down to the one record that does not apply, kept in
-- ade_rejected_records with its reason (tried again after
-- ade.failed_retry_interval).  k bad records in n cost about 2 k log2(n)
-- statements, not n.
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

-- Device records, applied: in one statement when they all apply (the usual
-- case); else, when a record is the trouble (ade_record_error()), rule 4
-- first (per serial the record with the latest op_date, the last in page
-- order among equals; one whose op_date is not a date loses), then in
-- halves (ade_apply_halves()): the others apply, and each that does not is
-- kept in ade_rejected_records with its reason.  skipped counts the
-- records not applied.
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

-- One ABM page, applied, and the token's cursor and mode stored with its
-- rows, in one statement of src/sync.c: a run that dies loses nothing and
-- skips nothing.
--   p_devices NULL: only the cursor and mode change
CREATE FUNCTION ade_apply_page(p_token bigint, p_devices jsonb, p_fetch boolean,
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
	-- the one lock rule with the application (src/coexist.c)
	PERFORM @extschema@.ade_lock_hosts();
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
			   SET deleted_at = now(), deleted_reason = 'reconciled', needs_assign = false, updated_at = now()
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
	-- the first full fetch of a token is where its reconciles count from
	IF v_prev = 'fetch' AND p_mode = 'sync' THEN
		UPDATE @extschema@.abm_tokens t SET reconciled_at = now()
		 WHERE t.id = p_token AND t.reconciled_at IS NULL;
	END IF;
END
$$;
COMMENT ON FUNCTION ade_apply_page(bigint, jsonb, boolean, text, text, text) IS
	'internal: applies one ABM page (sync rules 4-8) and stores the cursor, in one statement';

-- Is a reconcile of this token due or under way (src/sync.c asks before
-- its reconcile pages)?  Its cursor when under way (null: start one).  A
-- token that is not in sync mode (a fetch is under way, or a restore's
-- cursor has not answered yet) reconciles later.
CREATE FUNCTION ade_reconcile_state(p_token bigint, p_interval_min int,
	OUT due boolean, OUT cursor text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT t.mode = 'sync' AND t.cursor IS NOT NULL AND t.restored_at IS NULL
		   AND (t.reconcile_started_at IS NOT NULL OR t.reconcile_due
				-- (never reconciled: a token added back after a removal counts
				-- from when it was first added)
				OR (p_interval_min > 0
					AND coalesce(t.reconciled_at, t.created_at) + make_interval(mins => p_interval_min) <= now())),
		   t.reconcile_cursor
	  FROM @extschema@.abm_tokens t WHERE t.id = p_token
$$;
COMMENT ON FUNCTION ade_reconcile_state(bigint, int) IS
	'internal: whether a reconcile of the token is due or under way, and its fetch cursor';

-- One page of a reconcile: a full fetch (POST /server/devices) with a
-- cursor of its own beside the token's sync cursor, which it never
-- touches, so that no event of the sync is lost however many runs the
-- reconcile takes.  The page applies as a fetch page does (rules 4-8, an
-- older record never overwriting newer news), and its cursor is stored
-- with it.  After the last page, every live device of the token that ABM
-- last said was the token's before the reconcile began (listed_at: a
-- record applied, or a page of a reconcile that listed it) is
-- soft-deleted, reason 'reconciled': ABM
-- no longer lists it (a release or a move made in ABM that sent no
-- delete).  p_asked is the cursor the page was asked with: when another
-- session changed it meanwhile, nothing is applied (null counts).
--   p_cursor null: the reconcile starts over (ABM refused its cursor)
CREATE FUNCTION ade_apply_reconcile_page(p_token bigint, p_asked text, p_devices jsonb,
	p_cursor text, p_more boolean, p_fetched_until text,
	OUT applied boolean, OUT listed int, OUT reconciled int)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t record;
	v_freed text[];
	v_note int;
BEGIN
	-- the one lock rule with the application (src/coexist.c)
	PERFORM @extschema@.ade_lock_hosts();
	applied := false; listed := 0; reconciled := 0;
	SELECT x.reconcile_cursor, x.reconcile_started_at INTO t
	  FROM @extschema@.abm_tokens x WHERE x.id = p_token;
	IF NOT FOUND OR t.reconcile_cursor IS DISTINCT FROM p_asked THEN
		RETURN;
	END IF;
	applied := true;
	IF p_cursor IS NULL THEN
		UPDATE @extschema@.abm_tokens x
		   SET reconcile_cursor = NULL, reconcile_started_at = NULL, updated_at = now()
		 WHERE x.id = p_token;
		RETURN;
	END IF;
	-- the first page: the reconcile begins now.  Times of the clock, not of
	-- the transaction (now()): a transaction that began before another
	-- session's reconcile must not date what it does before that one
	IF t.reconcile_started_at IS NULL THEN
		t.reconcile_started_at := clock_timestamp();
	END IF;
	listed := coalesce(jsonb_array_length(p_devices), 0);
	IF listed > 0 THEN
		PERFORM FROM @extschema@.ade_apply_devices(p_token, p_devices, true, p_fetched_until::timestamptz);
		-- what the page lists and the apply did not write (a record older
		-- than what is stored, from a clock apart or an event of the same
		-- second; one kept aside) is listed all the same
		UPDATE @extschema@.host_dep_assignments d
		   SET listed_at = clock_timestamp()
		  FROM jsonb_array_elements(p_devices) e
		 WHERE jsonb_typeof(e) = 'object' AND d.hardware_serial = e->>'serial_number'
		   AND d.abm_token_id = p_token
		   AND coalesce(d.listed_at, '-infinity') < t.reconcile_started_at;
	END IF;
	IF p_more THEN
		UPDATE @extschema@.abm_tokens x
		   SET reconcile_cursor = p_cursor, reconcile_started_at = t.reconcile_started_at,
			   updated_at = now()
		 WHERE x.id = p_token;
		RETURN;
	END IF;
	WITH unlisted AS (
		UPDATE @extschema@.host_dep_assignments d
		   SET deleted_at = now(), deleted_reason = 'reconciled', needs_assign = false, updated_at = now()
		 WHERE d.abm_token_id = p_token AND d.deleted_at IS NULL
		   -- ABM said it is the token's (a record applied, a page listed
		   -- it) last before the reconcile began
		   AND coalesce(d.listed_at, '-infinity') < t.reconcile_started_at
		   AND NOT EXISTS (SELECT 1 FROM @extschema@.ade_rejected_records x
							WHERE x.token_id = p_token AND x.hardware_serial = d.hardware_serial
							  AND x.from_fetch AND x.rejected_at >= t.reconcile_started_at)
		RETURNING d.host_id, d.hardware_serial)
	SELECT array_agg(u.hardware_serial),
		   @extschema@.ade_notify_hosts(array_agg('deleted'::text), array_agg(u.host_id),
									   array_agg(u.hardware_serial), array_agg(p_token))
	  INTO v_freed, v_note
	  FROM unlisted u;
	reconciled := coalesce(cardinality(v_freed), 0);
	IF v_freed IS NOT NULL THEN
		PERFORM @extschema@.ade_release_tied(v_freed);
	END IF;
	-- a reconcile asked for after this one began is still due
	UPDATE @extschema@.abm_tokens x
	   SET reconcile_cursor = NULL, reconcile_started_at = NULL,
		   reconcile_due = coalesce(x.reconcile_asked_at > t.reconcile_started_at, false),
		   reconciled_at = now(), updated_at = now()
	 WHERE x.id = p_token;
END
$$;
COMMENT ON FUNCTION ade_apply_reconcile_page(bigint, text, jsonb, text, boolean, text) IS
	'internal: applies one page of a reconcile (a full fetch beside the sync); after the last, soft-deletes what ABM no longer lists';

-- The kept records of a token that are due, tried again, one at a time,
-- oldest first, until p_deadline (the token's share of the run's time):
-- those that apply now leave ade_rejected_records, the others wait again.
-- Returns how many applied.
CREATE FUNCTION ade_retry_rejected(p_token bigint, p_deadline timestamptz) RETURNS int
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
	n int := 0;
	v_state text;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM @extschema@.ade_rejected_records x
					WHERE x.token_id = p_token AND x.retry_at <= now()) THEN
		RETURN 0;
	END IF;
	-- the one lock rule with the application (src/coexist.c)
	PERFORM @extschema@.ade_lock_hosts();
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

-- The end of one token's run: its state and its history row.
CREATE FUNCTION ade_finish_run(p_token bigint, p_mode text, p_pages int,
	p_added int, p_modified int, p_deleted int, p_skipped int, p_assigned int,
	p_failed int, p_requests int, p_started_at timestamptz, p_error text,
	p_kind text, p_busy boolean, p_note text, p_reconciled int,
	OUT org_name text, OUT mode text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT p_busy THEN
		UPDATE @extschema@.abm_tokens t
		   SET last_sync_at = clock_timestamp(),
			   last_error = p_error,
			   terms_expired = CASE WHEN p_error IS NULL THEN false
									WHEN p_kind = 'T_C_NOT_SIGNED' THEN true
									ELSE t.terms_expired END,
			   token_invalid = CASE WHEN p_error IS NULL THEN false
									WHEN p_kind = 'token_rejected' THEN true
									ELSE t.token_invalid END,
			   updated_at = now()
		 WHERE t.id = p_token;
	END IF;
	SELECT t.org_name, coalesce(p_mode, t.mode) INTO org_name, mode
	  FROM @extschema@.abm_tokens t WHERE t.id = p_token;
	INSERT INTO @extschema@.ade_sync_runs (token_id, org_name, mode, pages, added,
		modified, deleted, skipped, assigned, failed, requests, started_at,
		finished_at, duration_ms, error, note, reconciled)
	VALUES (p_token, org_name, mode, p_pages, p_added, p_modified, p_deleted,
		p_skipped, p_assigned, p_failed, p_requests, p_started_at, clock_timestamp(),
		extract(epoch FROM clock_timestamp() - p_started_at) * 1000, p_error, p_note, p_reconciled);
END
$$;
COMMENT ON FUNCTION ade_finish_run(bigint, text, int, int, int, int, int, int, int, int, timestamptz, text, text, boolean, text, int) IS
	'internal: records the end of one token''s run on the token and in ade_sync_runs';

-- A pause ABM asked for (abm.c, at the end of a token's run): kept until
-- it ends, a longer one replacing a shorter; pauses that ended go.
CREATE FUNCTION ade_pause(p_token bigint, p_request text, p_until timestamptz,
	p_status int, p_retry_after int) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	DELETE FROM @extschema@.ade_rate_limits r WHERE r.paused_until OPERATOR(pg_catalog.<) now();
	INSERT INTO @extschema@.ade_rate_limits AS r (token_id, request, paused_until, status, retry_after)
	VALUES (p_token, p_request, p_until, p_status, p_retry_after)
	ON CONFLICT (token_id, request) DO UPDATE
	   SET paused_until = excluded.paused_until, status = excluded.status,
		   retry_after = excluded.retry_after, asked_at = now()
	 WHERE r.paused_until OPERATOR(pg_catalog.<) excluded.paused_until;
$$;
COMMENT ON FUNCTION ade_pause(bigint, text, timestamptz, int, int) IS
	'internal: stores a pause ABM asked for (Retry-After) on a kind of request of a token';

-- The last n runs, newest first (ade_reader may call it).
CREATE FUNCTION ade_last_runs(n int DEFAULT 10) RETURNS SETOF ade_sync_runs
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT * FROM @extschema@.ade_sync_runs r ORDER BY r.id DESC LIMIT n
$$;
COMMENT ON FUNCTION ade_last_runs(int) IS 'the last n ade_sync() runs (one row per token per run), newest first';

REVOKE ALL ON PROCEDURE ade_sync_job(), ade_sync_job(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION ade_sync(), ade_sync(bigint),
	ade_apply_records(bigint, jsonb, boolean, timestamptz), ade_apply_devices(bigint, jsonb, boolean, timestamptz),
	ade_apply_page(bigint, jsonb, boolean, text, text, text), ade_retry_rejected(bigint, timestamptz),
	ade_release_tied(text[]), ade_record_op_date(jsonb, timestamptz),
	ade_apply_halves(bigint, jsonb, boolean, timestamptz),
	ade_finish_run(bigint, text, int, int, int, int, int, int, int, int, timestamptz, text, text, boolean, text, int),
	ade_pause(bigint, text, timestamptz, int, int), ade_last_runs(int),
	ade_reconcile_state(bigint, int), ade_apply_reconcile_page(bigint, text, jsonb, text, boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ade_last_runs(int) TO ade_reader;
