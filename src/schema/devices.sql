/*-------------------------------------------------------------------------
 *
 * devices.sql
 *		Source of the ade install script: what an admin does to one device
 *		(0.5): a profile of its own or none, and the row work of the device
 *		calls to ABM.
 *
 * Owns the per-device overrides (ade_device_pins: a profile pinned to a
 * serial, or a hold: no automatic assignment), the view of them
 * (ade_device_overrides), the functions that set and clear them, the log
 * of every answer ABM gave to a device call (ade_device_actions: details,
 * profile removal, release, activation lock), what each answer does to the
 * tables (ade_store_device_answers()), and the request of a reconcile
 * (ade_request_reconcile()).  (The tables themselves are in tables.sql.)
 * src/devices.c owns the calls themselves (batches of at most 1000
 * through the token that holds each serial) and the order of work: the
 * run lock, every call to Apple, then the answers stored under the one
 * lock rule with the application (src/coexist.c), so that an application
 * statement never waits for Apple.
 *
 * Overrides are keyed by serial, not by host or token: a pin survives the
 * device's moves between tokens, its host being deleted and made again,
 * and its release and return.  The assignment (profiles.sql) and the page
 * apply (sync.sql) join ade_device_pins by serial: a pinned device gets
 * its pin, whatever its team, token or platform; a held one gets nothing.
 *
 * IDENTIFICATION
 *	  src/schema/devices.sql
 *
 *-------------------------------------------------------------------------
 */

CREATE VIEW ade_device_overrides AS
	SELECT p.hardware_serial AS serial, d.host_id, d.abm_token_id AS token_id,
		   p.profile, p.profile IS NULL AS hold, p.since, p.reason, p.set_by,
		   (d.deleted_at IS NULL AND d.hardware_serial IS NOT NULL) AS live
	  FROM ade_device_pins p
	  LEFT JOIN host_dep_assignments d ON d.hardware_serial OPERATOR(pg_catalog.=) p.hardware_serial;
COMMENT ON VIEW ade_device_overrides IS
	'devices pinned to a profile of their own (profile) or held out of automatic assignment (hold)';

-- A serial as the device functions take it: a clear error for a NULL, an
-- empty one, or one with characters no Apple serial has (quotes, spaces,
-- control characters); ABM's serials are letters and digits.
CREATE FUNCTION ade_check_serials(p_serials text[], p_what text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_bad text;
	v_out text[];
BEGIN
	IF p_serials IS NULL THEN
		RAISE EXCEPTION '% is NULL', p_what USING ERRCODE = 'null_value_not_allowed',
			DETAIL = 'A NULL usually comes from a lookup that found nothing.';
	END IF;
	SELECT s INTO v_bad FROM unnest(p_serials) s
	 WHERE s IS NULL OR s !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'not a device serial number: %',
			CASE WHEN v_bad IS NULL THEN 'NULL' ELSE quote_literal(left(v_bad, 70)) END
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A serial is 1 to 64 letters, digits, dots, dashes or underscores.';
	END IF;
	SELECT coalesce(array_agg(DISTINCT s ORDER BY s), '{}') INTO v_out FROM unnest(p_serials) s;
	RETURN v_out;
END
$$;
COMMENT ON FUNCTION ade_check_serials(text[], text) IS
	'internal: the serials of a device call, checked, distinct and sorted';

-- Writes a pin or hold (p_profile null) and makes the device's next run
-- look at it: a pin is sent unless the device holds it; a hold stops what
-- was due.
CREATE FUNCTION ade_put_pin(p_serial text, p_profile jsonb, p_reason text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- the one lock rule with the application (src/coexist.c)
	PERFORM @extschema@.ade_lock_hosts();
	INSERT INTO @extschema@.ade_device_pins AS p (hardware_serial, profile, reason)
	VALUES (p_serial, p_profile, p_reason)
	ON CONFLICT (hardware_serial) DO UPDATE
	   SET profile = excluded.profile, reason = excluded.reason, since = now(),
		   set_by = excluded.set_by;
	UPDATE @extschema@.host_dep_assignments d
	   SET needs_assign = p_profile IS NOT NULL,
		   retry_at = CASE WHEN p_profile IS NULL THEN d.retry_at END,
		   updated_at = now()
	 WHERE d.hardware_serial = p_serial AND d.deleted_at IS NULL;
	IF NOT FOUND THEN
		RAISE NOTICE 'no live device % here yet: its % applies when ABM reports it', p_serial,
			CASE WHEN p_profile IS NULL THEN 'hold' ELSE 'profile' END;
	END IF;
END
$$;
COMMENT ON FUNCTION ade_put_pin(text, jsonb, text) IS
	'internal: writes a device''s pin or hold and marks the device for its next run';

CREATE FUNCTION ade_set_device_profile(serial text, profile jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_serial text := (@extschema@.ade_check_serials(ARRAY[serial], 'serial'))[1];
BEGIN
	IF profile IS NULL THEN
		RAISE EXCEPTION 'profile is NULL' USING ERRCODE = 'null_value_not_allowed',
			DETAIL = 'A NULL usually comes from a lookup that found nothing; it never clears a pin.',
			HINT = 'ade_hold_device() holds a device out of assignment; ade_clear_device_profile() removes a pin.';
	END IF;
	PERFORM @extschema@.ade_check_profile(profile);
	PERFORM @extschema@.ade_put_pin(v_serial, profile, 'pinned');
	-- a profile ABM refused, set again: the next sync sends it again
	DELETE FROM @extschema@.ade_profile_definitions d
	 WHERE d.profile_key = md5(ade_set_device_profile.profile::text) AND d.refusal IS NOT NULL;
END
$$;
COMMENT ON FUNCTION ade_set_device_profile(text, jsonb) IS
	'pins one device to an enrollment profile: wins over every scope, survives moves and host re-creation';

CREATE FUNCTION ade_hold_device(serial text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@.ade_put_pin((@extschema@.ade_check_serials(ARRAY[serial], 'serial'))[1], NULL, 'held');
END
$$;
COMMENT ON FUNCTION ade_hold_device(text) IS
	'holds one device out of automatic profile assignment until ade_clear_device_profile()';

CREATE FUNCTION ade_clear_device_profile(serial text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_serial text := (@extschema@.ade_check_serials(ARRAY[serial], 'serial'))[1];
BEGIN
	-- the one lock rule with the application (src/coexist.c)
	PERFORM @extschema@.ade_lock_hosts();
	DELETE FROM @extschema@.ade_device_pins p WHERE p.hardware_serial = v_serial;
	IF NOT FOUND THEN
		RAISE NOTICE 'device % has no profile of its own and no hold', v_serial;
		RETURN;
	END IF;
	-- back to its scope's profile on the next run (sent unless it holds it)
	UPDATE @extschema@.host_dep_assignments d
	   SET needs_assign = true, retry_at = NULL, updated_at = now()
	 WHERE d.hardware_serial = v_serial AND d.deleted_at IS NULL;
END
$$;
COMMENT ON FUNCTION ade_clear_device_profile(text) IS
	'removes a device''s own profile or hold: it gets its scope''s profile on the next run';

-- Which token each serial of a device call goes through: the one that
-- holds it live.  p_any (details): a serial nobody holds goes through
-- every token.  Otherwise a serial this database does not hold is an
-- error, and nothing is sent.
CREATE FUNCTION ade_device_targets(p_serials text[], p_any boolean)
RETURNS TABLE (token_id bigint, serials text[])
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_missing text[];
BEGIN
	IF NOT p_any THEN
		SELECT array_agg(s ORDER BY s) INTO v_missing
		  FROM unnest(p_serials) s
		 WHERE NOT EXISTS (SELECT 1 FROM @extschema@.host_dep_assignments d
							WHERE d.hardware_serial = s AND d.deleted_at IS NULL);
		IF v_missing IS NOT NULL THEN
			RAISE EXCEPTION '% of the serials % not held by this database: %',
				cardinality(v_missing), CASE WHEN cardinality(v_missing) = 1 THEN 'is' ELSE 'are' END,
				array_to_string(v_missing[1:5], ', ') || CASE WHEN cardinality(v_missing) > 5 THEN ', ...' ELSE '' END
				USING ERRCODE = 'no_data_found',
					  DETAIL = 'Nothing was sent to ABM.',
					  HINT = 'Only a device with a live assignment here (host_dep_assignments.deleted_at is null) can be acted on; ade_device_details() looks a serial up in every token.';
		END IF;
	END IF;
	RETURN QUERY
	SELECT x.token_id, array_agg(x.serial ORDER BY x.serial)
	  FROM (SELECT s AS serial, d.abm_token_id AS token_id
			  FROM unnest(p_serials) s
			  JOIN @extschema@.host_dep_assignments d ON d.hardware_serial = s AND d.deleted_at IS NULL
			UNION ALL
			-- (not through a token Apple refuses: it would only fail)
			SELECT s, t.id
			  FROM unnest(p_serials) s
			 CROSS JOIN @extschema@.abm_tokens t
			 WHERE p_any AND NOT t.token_invalid AND NOT t.terms_expired
			   AND NOT EXISTS (SELECT 1 FROM @extschema@.host_dep_assignments d
								WHERE d.hardware_serial = s AND d.deleted_at IS NULL)) x
	 GROUP BY x.token_id
	 ORDER BY x.token_id;
END
$$;
COMMENT ON FUNCTION ade_device_targets(text[], boolean) IS
	'internal: the token each serial of a device call goes through (the one that holds it; details: every token for the others)';

-- What ABM answered to one batch of a device call (p_answer null: no
-- answer, p_error says why), logged per serial, and what it does:
--   details         the record of a device this token holds replaces the
--                   stored one (and its migration deadline);
--   remove_profile  SUCCESS: the device holds no profile and is held out
--                   of automatic assignment (a 'profile removed' hold);
--   release         SUCCESS: its assignment is soft-deleted ('released');
--                   the host row stays, as after ABM's own delete;
--   activation_lock logged only.
-- A serial missing from an answer counts as FAILED.
CREATE FUNCTION ade_store_device_answers(p_call bigint, p_action text, p_token bigint,
	p_serials text[], p_answer jsonb, p_error text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_freed text[];
	v_note int;
BEGIN
	-- the one lock rule with the application (src/coexist.c)
	PERFORM @extschema@.ade_lock_hosts();
	INSERT INTO @extschema@.ade_device_actions
		(call_id, hardware_serial, token_id, action, response_status, error, device)
	SELECT p_call, s, p_token, p_action,
		   CASE WHEN p_answer IS NULL THEN NULL
				WHEN p_action = 'details' THEN coalesce(p_answer->'devices'->s->>'response_status', 'FAILED')
				WHEN p_action = 'activation_lock' THEN coalesce(p_answer->>'response_status', 'FAILED')
				ELSE coalesce(p_answer->'devices'->>s, 'FAILED') END,
		   p_error,
		   CASE WHEN p_action = 'details' AND p_answer->'devices'->s->>'response_status' = 'SUCCESS'
				THEN (p_answer->'devices'->s) - 'response_status' END
	  FROM unnest(p_serials) s;
	IF p_answer IS NULL THEN
		RETURN;
	END IF;
	IF p_action = 'details' THEN
		UPDATE @extschema@.host_dep_assignments d
		   SET device = coalesce(d.device, '{}') || (p_answer->'devices'->d.hardware_serial) - 'response_status',
			   mdm_migration_deadline = @extschema@.ade_migration_deadline(p_answer->'devices'->d.hardware_serial),
			   updated_at = now()
		 WHERE d.hardware_serial = ANY (p_serials) AND d.abm_token_id = p_token
		   AND d.deleted_at IS NULL
		   AND jsonb_typeof(p_answer->'devices'->d.hardware_serial) = 'object'
		   AND p_answer->'devices'->d.hardware_serial->>'response_status' = 'SUCCESS';
	ELSIF p_action = 'remove_profile' THEN
		INSERT INTO @extschema@.ade_device_pins AS p (hardware_serial, profile, reason)
		SELECT s, NULL, 'profile removed' FROM unnest(p_serials) s
		 WHERE p_answer->'devices'->>s = 'SUCCESS'
		ON CONFLICT (hardware_serial) DO UPDATE
		   SET profile = NULL, reason = 'profile removed', since = now(), set_by = excluded.set_by;
		UPDATE @extschema@.host_dep_assignments d
		   SET profile_uuid = NULL, assign_profile_response = NULL, response_updated_at = now(),
			   needs_assign = false, retry_at = NULL, updated_at = now()
		 WHERE d.hardware_serial = ANY (p_serials) AND d.abm_token_id = p_token
		   AND p_answer->'devices'->>d.hardware_serial = 'SUCCESS';
	ELSIF p_action = 'release' THEN
		WITH gone AS (
			UPDATE @extschema@.host_dep_assignments d
			   SET deleted_at = now(), deleted_reason = 'released', needs_assign = false,
				   -- a page ABM sent before the release is older news
				   op_date = greatest(d.op_date, now()), updated_at = now()
			 WHERE d.hardware_serial = ANY (p_serials) AND d.abm_token_id = p_token
			   AND d.deleted_at IS NULL
			   AND p_answer->'devices'->>d.hardware_serial = 'SUCCESS'
			RETURNING d.host_id, d.hardware_serial)
		SELECT array_agg(g.hardware_serial),
			   @extschema@.ade_notify_hosts(array_agg('deleted'::text), array_agg(g.host_id),
										   array_agg(g.hardware_serial), array_agg(p_token))
		  INTO v_freed, v_note
		  FROM gone g;
		IF v_freed IS NOT NULL THEN
			PERFORM @extschema@.ade_release_tied(v_freed);
		END IF;
	END IF;
END
$$;
COMMENT ON FUNCTION ade_store_device_answers(bigint, text, bigint, text[], jsonb, text) IS
	'internal: logs ABM''s answer to one batch of a device call per serial and applies it';

-- What a device call returns: one row per serial, the answer of the token
-- that holds it (details of a serial nobody holds: the first token that
-- knows it, else NOT_ACCESSIBLE with no token).  (The call's rows are
-- read in the transaction that wrote them.)
CREATE FUNCTION ade_device_call_result(p_call bigint)
RETURNS TABLE (serial text, token_id bigint, response_status text, device jsonb)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT DISTINCT ON (a.hardware_serial) a.hardware_serial,
		   -- a serial no token here holds and none reaches: no token
		   CASE WHEN a.response_status IS DISTINCT FROM 'NOT_ACCESSIBLE'
					 OR EXISTS (SELECT 1 FROM @extschema@.host_dep_assignments d
								 WHERE d.hardware_serial = a.hardware_serial AND d.deleted_at IS NULL)
				THEN a.token_id END,
		   a.response_status, a.device
	  FROM @extschema@.ade_device_actions a
	 WHERE a.call_id = p_call
	 ORDER BY a.hardware_serial, coalesce(a.response_status = 'SUCCESS', false) DESC,
			  a.response_status IS NULL, a.token_id
$$;
COMMENT ON FUNCTION ade_device_call_result(bigint) IS
	'internal: one row per serial of a device call';

-- mdm_migration_deadline of a device record, or null (a date ABM sends for
-- a device being migrated from another MDM; unreadable: null)
CREATE FUNCTION ade_migration_deadline(p_rec jsonb) RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- most records have none: no subtransaction for them
	IF jsonb_typeof(p_rec) IS DISTINCT FROM 'object' OR coalesce(p_rec->>'mdm_migration_deadline', '') = '' THEN
		RETURN NULL;
	END IF;
	BEGIN
		RETURN nullif(nullif((p_rec->>'mdm_migration_deadline')::timestamptz, 'infinity'), '-infinity');
	EXCEPTION WHEN data_exception THEN
		RETURN NULL;
	END;
END
$$;
COMMENT ON FUNCTION ade_migration_deadline(jsonb) IS
	'internal: the mdm_migration_deadline of a device record, or null';

CREATE FUNCTION ade_device_details(serials text[])
RETURNS TABLE (serial text, token_id bigint, response_status text, device jsonb)
	AS 'MODULE_PATHNAME', 'ade_device_details' LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_device_details(text[]) IS
	'POST /devices: ABM''s record of each serial (any number, in batches of 1000); refreshes the stored record of devices held here';

CREATE FUNCTION ade_remove_profile(serials text[])
RETURNS TABLE (serial text, token_id bigint, response_status text)
	AS 'MODULE_PATHNAME', 'ade_remove_profile' LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_remove_profile(text[]) IS
	'DELETE /profile/devices: removes the enrollment profile of devices held here; they stay out of automatic assignment until ade_clear_device_profile()';

CREATE FUNCTION ade_release_devices(serials text[], confirm boolean DEFAULT false)
RETURNS TABLE (serial text, token_id bigint, response_status text)
	AS 'MODULE_PATHNAME', 'ade_release_devices' LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_release_devices(text[], boolean) IS
	'POST /devices/disown: takes devices held here out of the organisation at Apple, for good; refused unless confirm => true';

CREATE FUNCTION ade_escrow_activation_lock(serial text, escrow_key text DEFAULT NULL,
	lost_message text DEFAULT NULL) RETURNS text
	AS 'MODULE_PATHNAME', 'ade_escrow_activation_lock' LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_escrow_activation_lock(text, text, text) IS
	'POST /device/activationlock for a device held here; returns ABM''s response_status; the escrow key is never stored or shown';

-- The next run of the token reconciles: a full fetch beside its sync that
-- soft-deletes every live device of the token it does not list.  Asked
-- again within ade.min_refetch_interval of the last request: refused.
CREATE FUNCTION ade_request_reconcile(token_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_last timestamptz;
	v_min interval := coalesce(nullif(current_setting('ade.min_refetch_interval', true), ''), '1h')::interval;
BEGIN
	IF token_id IS NULL THEN
		RAISE EXCEPTION 'token_id is NULL' USING ERRCODE = 'null_value_not_allowed',
			HINT = 'SELECT id, org_name FROM abm_tokens lists the tokens.';
	END IF;
	SELECT t.reconcile_requested_at INTO v_last
	  FROM @extschema@.abm_tokens t WHERE t.id = ade_request_reconcile.token_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'abm token % does not exist', ade_request_reconcile.token_id
			USING ERRCODE = 'no_data_found',
				  HINT = 'SELECT id, org_name FROM abm_tokens lists the tokens.';
	END IF;
	IF v_last IS NOT NULL AND v_last + v_min > clock_timestamp() THEN
		RAISE EXCEPTION 'a reconcile of abm token % was asked for % ago; ask again in %',
			ade_request_reconcile.token_id, date_trunc('second', clock_timestamp() - v_last),
			date_trunc('second', v_last + v_min - clock_timestamp()) + interval '1 second'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'ade.min_refetch_interval keeps a script from making ABM list every device over and over.',
				  HINT = 'ade_status.reconcile shows how far the reconcile that was asked for is.';
	END IF;
	UPDATE @extschema@.abm_tokens t
	   SET reconcile_requested_at = clock_timestamp(), reconcile_asked_at = clock_timestamp(),
		   reconcile_due = true,
		   updated_at = now()
	 WHERE t.id = ade_request_reconcile.token_id;
END
$$;
COMMENT ON FUNCTION ade_request_reconcile(bigint) IS
	'the next run of the token reconciles (a full fetch that soft-deletes what ABM no longer lists); refused within ade.min_refetch_interval';

REVOKE ALL ON ade_device_overrides FROM PUBLIC;
REVOKE ALL ON FUNCTION ade_check_serials(text[], text),
	ade_put_pin(text, jsonb, text), ade_set_device_profile(text, jsonb), ade_hold_device(text),
	ade_clear_device_profile(text), ade_device_targets(text[], boolean),
	ade_store_device_answers(bigint, text, bigint, text[], jsonb, text),
	ade_device_call_result(bigint), ade_migration_deadline(jsonb),
	ade_device_details(text[]), ade_remove_profile(text[]), ade_release_devices(text[], boolean),
	ade_escrow_activation_lock(text, text, text), ade_request_reconcile(bigint) FROM PUBLIC;
