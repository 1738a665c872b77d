/*-------------------------------------------------------------------------
 *
 * profiles.sql
 *		Source of the ade install script: enrollment profiles and their
 *		assignment (sync rule 10).
 *
 * Owns which profile a device gets, setting a profile for a scope
 * (ade_set_profile()), which devices are due an assignment
 * (ade_assign_candidates()), how many wait for a profile no scope defines
 * (ade_unassignable()), and what ABM's answer to one PUT /profile/devices
 * does to each row (ade_store_answers(): cooldowns, FAILED for a serial
 * missing from the answer).  src/assign.c owns the protocol calls
 * (POST /profile, PUT /profile/devices), their order and the run's deadline.
 *
 * Which profile a device gets is decided in one place,
 * ade_device_profiles(): for every (team, platform) of a token, the team's
 * profile when its team has one, else the most specific of (token,
 * platform), token, platform, the organisation default and the built-in
 * default (ade.enroll_url).  The page apply (sync.c / sync.sql) judges
 * whether ABM's record shows "ours" by it, and the assignment sends what it
 * says, so the two cannot disagree: a device our profile was sent to is
 * never found wanting when ABM echoes the assignment back.
 *
 * The state of a device (host_dep_assignments): profile_uuid is the profile
 * it holds at Apple as far as we know (from ABM's last record, or our last
 * SUCCESS), assign_profile_response the answer to our last PUT, and
 * needs_assign means "look at this device": the assignment sends it its
 * profile unless it holds it already, once any cooldown (retry_at) is over.
 *
 * IDENTIFICATION
 *	  src/schema/profiles.sql
 *
 *-------------------------------------------------------------------------
 */

CREATE FUNCTION ade_set_profile(profile jsonb, token_id bigint DEFAULT NULL,
	platform text DEFAULT NULL, team_id bigint DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF team_id IS NOT NULL THEN
		IF token_id IS NOT NULL OR platform IS NOT NULL THEN
			RAISE EXCEPTION 'a team profile applies to every token and platform of the team'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Call ade_set_profile(profile, team_id => ...) alone.';
		END IF;
		IF NOT EXISTS (SELECT 1 FROM @extschema@.teams tm WHERE tm.id = ade_set_profile.team_id) THEN
			RAISE EXCEPTION 'team % does not exist', team_id USING ERRCODE = 'no_data_found';
		END IF;
	END IF;
	IF platform IS NOT NULL AND platform NOT IN ('darwin', 'ios', 'ipados', 'tvos', 'visionos') THEN
		RAISE EXCEPTION 'unknown platform "%"', platform
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use darwin, ios, ipados, tvos or visionos.';
	END IF;
	IF token_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM @extschema@.abm_tokens t WHERE t.id = ade_set_profile.token_id) THEN
		RAISE EXCEPTION 'abm token % does not exist', token_id USING ERRCODE = 'no_data_found';
	END IF;
	IF profile IS NULL THEN
		DELETE FROM @extschema@.ade_profiles x
		 WHERE x.token_id IS NOT DISTINCT FROM ade_set_profile.token_id
		   AND x.platform IS NOT DISTINCT FROM ade_set_profile.platform
		   AND x.team_id IS NOT DISTINCT FROM ade_set_profile.team_id;
		RETURN;
	END IF;
	IF jsonb_typeof(profile) <> 'object' THEN
		RAISE EXCEPTION 'the profile must be a JSON object, not %', jsonb_typeof(profile)
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF jsonb_typeof(profile->'profile_name') IS DISTINCT FROM 'string' OR profile->>'profile_name' = '' THEN
		RAISE EXCEPTION 'the profile has no "profile_name"'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Apple requires profile_name and url in every profile.';
	END IF;
	IF jsonb_typeof(profile->'url') IS DISTINCT FROM 'string' OR profile->>'url' = '' THEN
		RAISE EXCEPTION 'the profile has no "url"'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Apple requires profile_name and url in every profile.';
	END IF;
	INSERT INTO @extschema@.ade_profiles AS x (token_id, platform, team_id, profile)
	VALUES (ade_set_profile.token_id, ade_set_profile.platform, ade_set_profile.team_id, ade_set_profile.profile)
	ON CONFLICT ON CONSTRAINT ade_profiles_scope
	DO UPDATE SET profile = excluded.profile, updated_at = now();
END
$$;
COMMENT ON FUNCTION ade_set_profile(jsonb, bigint, text, bigint) IS
	'sets (or with null clears) the enrollment profile of a scope; defined at Apple and assigned on the next sync';

-- The profile a device of this token gets, for every team (team_id 0: no
-- team) and platform, with its key and, once defined at Apple for this
-- token, its profile_uuid; profile null: none applies.  The one place that
-- decides it (see the header).  Every page and every run asks: one probe of
-- ade_profiles per platform, one row per team and platform.
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

-- The live devices of a token that are due an assignment, with the profile
-- each gets.  First, when the profile of a scope (team and platform)
-- changed since the last run, the live devices of that scope that do not
-- hold it are marked; then devices marked but holding their profile are
-- unmarked (a move to a team with the same profile, say); the due ones are
-- the rest of the marked ones whose cooldown is over and that have a
-- profile.  Ordered so that devices never sent come first, then those sent
-- longest ago (a batch that failed goes to the back of the queue), and a
-- batch shares one profile.  Cheap when nothing is due (a partial index).
CREATE FUNCTION ade_assign_candidates(p_token bigint)
RETURNS TABLE (hardware_serial text, profile_key text, profile_uuid text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_changed text[];
BEGIN
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

-- Live devices of a token that wait for a profile and have none to get.
CREATE FUNCTION ade_unassignable(p_token bigint) RETURNS bigint
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

-- Store ABM's answer to one PUT /profile/devices: every serial sent gets its
-- answer (missing from the answer: FAILED) and its cooldown; a SUCCESS
-- means it holds the profile now.
CREATE FUNCTION ade_store_answers(p_token bigint, p_uuid text, p_serials text[],
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

-- A batch that got no answer (ABM failed, timed out, throttled the request):
-- its devices go to the back of the queue, so that the next run sends the
-- others first and one bad batch never holds up the rest.  A 429 with a
-- Retry-After past ade.max_retry_wait (p_retry_after seconds): ABM said
-- when to come back, so no device of the token is sent before then.
CREATE FUNCTION ade_batch_unanswered(p_token bigint, p_serials text[], p_retry_after int)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	UPDATE @extschema@.host_dep_assignments d
	   SET assign_sent_at = now(), updated_at = now()
	 WHERE d.hardware_serial = ANY (p_serials) AND d.abm_token_id = p_token;
	UPDATE @extschema@.host_dep_assignments d
	   SET retry_at = greatest(d.retry_at, now() + make_interval(secs => p_retry_after)),
		   updated_at = now()
	 WHERE p_retry_after IS NOT NULL
	   AND d.abm_token_id = p_token AND d.deleted_at IS NULL AND d.needs_assign;
$$;
COMMENT ON FUNCTION ade_batch_unanswered(bigint, text[], int) IS
	'internal: marks the devices of a PUT /profile/devices that got no answer as sent, to the back of the queue; after a long 429, the token''s devices wait';

REVOKE ALL ON FUNCTION ade_set_profile(jsonb, bigint, text, bigint),
	ade_device_profiles(bigint), ade_assign_candidates(bigint), ade_unassignable(bigint),
	ade_store_answers(bigint, text, text[], jsonb, int, int),
	ade_batch_unanswered(bigint, text[], int) FROM PUBLIC;
