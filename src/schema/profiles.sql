/*-------------------------------------------------------------------------
 *
 * profiles.sql
 *		Source of the ade install script: enrollment profiles and their
 *		assignment (sync rule 10).
 *
 * Owns which profile a device gets (ade_effective_profiles(): most specific
 * first: (token, platform), token, platform, the organisation default, the
 * built-in default from ade.enroll_url; team profiles come first of all),
 * setting a profile for a scope (ade_set_profile()), which devices are due
 * an assignment (ade_assign_candidates()), how many wait for a profile no
 * scope defines (ade_unassignable()), and what ABM's answer to one
 * PUT /profile/devices does to each row (ade_store_answers(): cooldowns,
 * FAILED for a serial missing from the answer).  src/assign.c owns the
 * protocol calls (POST /profile, PUT /profile/devices) and their order.
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

-- The profile each platform of a token gets (team profiles aside): one
-- probe of ade_profiles per platform, most specific first ((token,
-- platform), token, platform, the organisation default), then the built-in
-- default, with its key and, once defined at Apple for this token, its
-- profile_uuid.  Every page and every run asks.
CREATE FUNCTION ade_effective_profiles(p_token bigint)
RETURNS TABLE (platform text, profile jsonb, profile_key text, profile_uuid text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN QUERY
	WITH plat(platform) AS (
		VALUES ('darwin'), ('ios'), ('ipados'), ('tvos'), ('visionos')
	), eff AS (
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
	)
	SELECT e.platform, e.profile, md5(e.profile::text), d.profile_uuid
	  FROM eff e
	  LEFT JOIN @extschema@.ade_profile_definitions d
		ON d.token_id = p_token AND d.profile_key = md5(e.profile::text);
END
$$;
COMMENT ON FUNCTION ade_effective_profiles(bigint) IS
	'the enrollment profile each platform of a token gets, and its profile_uuid once defined';

-- The live devices of a token that are due an assignment, with the profile
-- each gets.  First, when the profile that applies to a scope (a platform
-- or a team) changed since the last run, the devices it applies to are
-- marked; then the due ones are those that need a profile (rules 5 and 6,
-- and those marked) and whose cooldown is over.  Ordered so that a batch
-- shares one profile.  Cheap when nothing is due (a partial index).
CREATE FUNCTION ade_assign_candidates(p_token bigint)
RETURNS TABLE (hardware_serial text, profile_key text, profile jsonb, profile_uuid text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_changed text[];
BEGIN
	-- the scopes whose profile changed since the last run: the five platforms
	-- and every team (a team's scope is 'team:<id>')
	WITH cur AS (
		SELECT e.platform AS scope, e.profile_key
		  FROM @extschema@.ade_effective_profiles(p_token) e
		UNION ALL
		SELECT 'team:' || x.team_id, md5(x.profile::text)
		  FROM @extschema@.ade_profiles x WHERE x.team_id IS NOT NULL
		UNION ALL
		SELECT a.platform, NULL
		  FROM @extschema@.ade_profile_applied a
		 WHERE a.token_id = p_token AND a.platform LIKE 'team:%' AND a.profile_key IS NOT NULL
		   AND NOT EXISTS (SELECT 1 FROM @extschema@.ade_profiles x
							WHERE x.team_id IS NOT NULL AND 'team:' || x.team_id = a.platform)
	)
	SELECT array_agg(c.scope) INTO v_changed
	  FROM cur c
	  LEFT JOIN @extschema@.ade_profile_applied a ON a.token_id = p_token AND a.platform = c.scope
	 WHERE a.profile_key IS DISTINCT FROM c.profile_key;
	IF v_changed IS NOT NULL THEN
		-- rare: a profile changed; mark the live devices it applies to
		UPDATE @extschema@.host_dep_assignments d
		   SET needs_assign = true, updated_at = now()
		  FROM @extschema@.hosts h
		 WHERE d.abm_token_id = p_token AND d.deleted_at IS NULL AND NOT d.needs_assign
		   AND d.assign_profile_response = 'SUCCESS' AND h.id = d.host_id
		   AND (('team:' || h.team_id) = ANY (v_changed)
				OR (h.platform = ANY (v_changed)
					AND NOT EXISTS (SELECT 1 FROM @extschema@.ade_profiles x WHERE x.team_id = h.team_id)));
		INSERT INTO @extschema@.ade_profile_applied AS a (token_id, platform, profile_key)
		SELECT p_token, e.platform, e.profile_key
		  FROM @extschema@.ade_effective_profiles(p_token) e
		 WHERE e.platform = ANY (v_changed)
		UNION ALL
		SELECT p_token, c.scope, (SELECT md5(x.profile::text) FROM @extschema@.ade_profiles x
								   WHERE x.team_id IS NOT NULL AND 'team:' || x.team_id = c.scope)
		  FROM unnest(v_changed) AS c(scope) WHERE c.scope LIKE 'team:%'
		ON CONFLICT (token_id, platform) DO UPDATE SET profile_key = excluded.profile_key;
	END IF;

	RETURN QUERY
	WITH eff AS (
		SELECT * FROM @extschema@.ade_effective_profiles(p_token)
	), tp AS (
		SELECT x.team_id, x.profile, md5(x.profile::text) AS profile_key, df.profile_uuid
		  FROM @extschema@.ade_profiles x
		  LEFT JOIN @extschema@.ade_profile_definitions df
			ON df.token_id = p_token AND df.profile_key = md5(x.profile::text)
		 WHERE x.team_id IS NOT NULL
	)
	SELECT d.hardware_serial,
		   CASE WHEN tp.team_id IS NOT NULL THEN tp.profile_key ELSE e.profile_key END,
		   CASE WHEN tp.team_id IS NOT NULL THEN tp.profile ELSE e.profile END,
		   CASE WHEN tp.team_id IS NOT NULL THEN tp.profile_uuid ELSE e.profile_uuid END
	  FROM @extschema@.host_dep_assignments d
	  LEFT JOIN @extschema@.hosts h ON h.id = d.host_id
	  LEFT JOIN eff e
		ON e.platform = coalesce(h.platform, @extschema@.ade_platform(d.device->>'device_family'), 'darwin')
	  LEFT JOIN tp ON tp.team_id = h.team_id
	 WHERE d.abm_token_id = p_token AND d.deleted_at IS NULL AND d.needs_assign
	   AND (d.retry_at IS NULL OR d.retry_at <= now())
	   AND (tp.team_id IS NOT NULL OR e.profile IS NOT NULL)
	   AND (EXISTS (SELECT 1 FROM eff WHERE eff.profile IS NOT NULL) OR EXISTS (SELECT 1 FROM tp))
	 ORDER BY 2, 1;
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
	v_none text[];
	n bigint;
BEGIN
	SELECT array_agg(e.platform) INTO v_none
	  FROM @extschema@.ade_effective_profiles(p_token) e WHERE e.profile IS NULL;
	IF v_none IS NULL THEN
		RETURN 0;
	ELSIF cardinality(v_none) = 5
		  AND NOT EXISTS (SELECT 1 FROM @extschema@.ade_profiles x WHERE x.team_id IS NOT NULL) THEN
		-- no profile at all: every device waits; not counted, so that a run
		-- stays cheap at any size
		RETURN -1;
	END IF;
	SELECT count(*) INTO n
	  FROM @extschema@.host_dep_assignments d
	  LEFT JOIN @extschema@.hosts h ON h.id = d.host_id
	 WHERE d.abm_token_id = p_token AND d.needs_assign AND d.deleted_at IS NULL
	   AND coalesce(h.platform, @extschema@.ade_platform(d.device->>'device_family'), 'darwin') = ANY (v_none)
	   AND NOT EXISTS (SELECT 1 FROM @extschema@.ade_profiles x WHERE x.team_id = h.team_id);
	RETURN n;
END
$$;
COMMENT ON FUNCTION ade_unassignable(bigint) IS
	'internal: how many live devices of a token wait for a profile that no scope defines (-1: no scope defines any)';

-- Store ABM's answer to one PUT /profile/devices: every serial sent gets its
-- answer (missing from the answer: FAILED) and its cooldown.
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
		   SET profile_uuid = p_uuid,
			   assign_profile_response = a.resp,
			   response_updated_at = now(),
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

REVOKE ALL ON FUNCTION ade_set_profile(jsonb, bigint, text, bigint),
	ade_effective_profiles(bigint), ade_assign_candidates(bigint), ade_unassignable(bigint),
	ade_store_answers(bigint, text, text[], jsonb, int, int) FROM PUBLIC;
