/*-------------------------------------------------------------------------
 *
 * profiles.sql
 *		Source of the ade install script: enrollment profiles and their
 *		assignment (sync rule 10).
 *
 * Owns which profile a device gets, setting a profile for a scope
 * (ade_set_profile(): a scope argument passed as NULL is an error, never
 * "any"), checking a profile as Apple's POST /profile takes it
 * (ade_check_profile()), what ABM refused of them, in words
 * (ade_profile_problem()), which devices are due an assignment
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

-- Why ade would not call a URL (https anywhere, plain http only to a
-- loopback host), or NULL: the rule of ade.abm_url and ade.enroll_url
-- (src/ade.c), for a profile's url.
CREATE FUNCTION ade_url_refusal(url text) RETURNS text
	AS 'MODULE_PATHNAME', 'ade_url_refusal' LANGUAGE C STRICT STABLE PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_url_refusal(text) IS
	'internal: why a URL is not one ade would use (https, or http to a loopback host), or null';

-- Is this one X.509 certificate in DER (src/token.c)?
CREATE FUNCTION ade_is_der_certificate(der bytea) RETURNS boolean
	AS 'MODULE_PATHNAME', 'ade_is_der_certificate' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_is_der_certificate(bytea) IS
	'internal: whether the bytes are one X.509 certificate in DER';

-- A profile as Apple's POST /profile takes it, checked before it is stored
-- (a profile Apple refuses would leave every device of its scope waiting):
-- a JSON object with profile_name and url; url (and configuration_web_url)
-- a URL devices can reach (https; http only to a loopback test server);
-- the known keys of the right type; skip_setup_items known pane names;
-- anchor_certs and supervising_host_certs base64 DER certificates;
-- language an ISO 639 code, region an ISO 3166 code.  A key Apple does not
-- define is sent as is, with a WARNING.
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

-- The scope named by ade_set_profile()'s and ade_clear_profile()'s
-- arguments, checked: an omitted scope argument means "any" (0 and 'any'
-- say the same explicitly); one passed as NULL is an error, never "any": a
-- NULL from a lookup that found nothing must not widen the scope to every
-- token or platform.  The platform is hosts.platform's word (darwin, ios,
-- ipados, tvos, visionos); macos is taken for darwin, as
-- ade_set_default_teams() calls it.
CREATE FUNCTION ade_profile_scope(p_token bigint, p_platform text, p_team bigint,
	OUT token_id bigint, OUT platform text, OUT team_id bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF p_token IS NULL OR p_platform IS NULL OR p_team IS NULL THEN
		RAISE EXCEPTION '% is NULL: a scope argument passed as NULL never means "any"',
			CASE WHEN p_token IS NULL THEN 'token_id' WHEN p_platform IS NULL THEN 'platform' ELSE 'team_id' END
			USING ERRCODE = 'null_value_not_allowed',
				  DETAIL = 'A NULL usually comes from a lookup that found nothing (a misspelt name, say).',
				  HINT = 'Omit the argument for "any" (or pass 0, or ''any'' for platform); SELECT id, org_name FROM abm_tokens and SELECT id, name FROM teams list what exists.';
	END IF;
	token_id := nullif(p_token, 0);
	platform := nullif(lower(p_platform), 'any');
	IF platform = 'macos' THEN
		platform := 'darwin';
	END IF;
	team_id := nullif(p_team, 0);
	IF team_id IS NOT NULL THEN
		IF token_id IS NOT NULL OR platform IS NOT NULL THEN
			RAISE EXCEPTION 'a team profile applies to every token and platform of the team'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Name the team alone: team_id => ...';
		END IF;
		IF NOT EXISTS (SELECT 1 FROM @extschema@.teams tm WHERE tm.id = team_id) THEN
			RAISE EXCEPTION 'team % does not exist', team_id USING ERRCODE = 'no_data_found',
				HINT = 'SELECT id, name FROM teams lists the teams.';
		END IF;
	END IF;
	IF platform IS NOT NULL AND platform NOT IN ('darwin', 'ios', 'ipados', 'tvos', 'visionos') THEN
		RAISE EXCEPTION 'unknown platform "%"', p_platform
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use darwin (or macos), ios, ipados, tvos or visionos, or omit it for any.';
	END IF;
	IF token_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM @extschema@.abm_tokens t WHERE t.id = ade_profile_scope.token_id) THEN
		RAISE EXCEPTION 'abm token % does not exist', token_id USING ERRCODE = 'no_data_found',
			HINT = 'SELECT id, org_name FROM abm_tokens lists the tokens.';
	END IF;
END
$$;
COMMENT ON FUNCTION ade_profile_scope(bigint, text, bigint) IS
	'internal: the scope of ade_set_profile() and ade_clear_profile(), checked (a NULL is an error, never any)';

-- Sets the profile of a scope.  A NULL profile is an error (from 0.5): a
-- NULL from a lookup that found nothing must not clear a scope any more
-- than widen one; ade_clear_profile() clears.
CREATE FUNCTION ade_set_profile(profile jsonb, token_id bigint DEFAULT 0,
	platform text DEFAULT 'any', team_id bigint DEFAULT 0) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v record;
BEGIN
	v := @extschema@.ade_profile_scope(token_id, platform, team_id);
	IF profile IS NULL THEN
		RAISE EXCEPTION 'profile is NULL' USING ERRCODE = 'null_value_not_allowed',
			DETAIL = 'A NULL usually comes from a lookup that found nothing; it never clears a scope.',
			HINT = 'To clear the scope''s profile, call ade_clear_profile() with the same scope arguments.';
	END IF;
	PERFORM @extschema@.ade_check_profile(profile);
	INSERT INTO @extschema@.ade_profiles AS x (token_id, platform, team_id, profile)
	VALUES (v.token_id, v.platform, v.team_id, ade_set_profile.profile)
	ON CONFLICT ON CONSTRAINT ade_profiles_scope
	DO UPDATE SET profile = excluded.profile, updated_at = now();
	-- a profile ABM refused, set again: the next sync sends it again
	DELETE FROM @extschema@.ade_profile_definitions d
	 WHERE d.profile_key = md5(ade_set_profile.profile::text) AND d.refusal IS NOT NULL;
END
$$;
COMMENT ON FUNCTION ade_set_profile(jsonb, bigint, text, bigint) IS
	'sets the enrollment profile of a scope; an omitted scope argument means any; a NULL scope argument or profile is an error';

-- Clears the profile of a scope (the same arguments as ade_set_profile(),
-- without the profile): its devices fall back to the next profile in the
-- order on the next sync.  Returns whether there was one; a NOTICE says so
-- when there was none.
CREATE FUNCTION ade_clear_profile(token_id bigint DEFAULT 0, platform text DEFAULT 'any',
	team_id bigint DEFAULT 0) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v record;
BEGIN
	v := @extschema@.ade_profile_scope(token_id, platform, team_id);
	DELETE FROM @extschema@.ade_profiles x
	 WHERE x.token_id IS NOT DISTINCT FROM v.token_id
	   AND x.platform IS NOT DISTINCT FROM v.platform
	   AND x.team_id IS NOT DISTINCT FROM v.team_id;
	IF NOT FOUND THEN
		RAISE NOTICE 'no profile is set for that scope: nothing cleared'
			USING HINT = 'SELECT token_id, platform, team_id, profile->>''profile_name'' FROM ade_profiles lists the scopes that have one.';
		RETURN false;
	END IF;
	RETURN true;
END
$$;
COMMENT ON FUNCTION ade_clear_profile(bigint, text, bigint) IS
	'clears the enrollment profile of a scope (no argument: the organisation default); false, with a NOTICE, when there was none';

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
	-- nothing due and nothing changed: nothing to write (a run with nothing
	-- to do takes no lock)
	IF v_changed IS NULL AND NOT EXISTS (
		SELECT 1 FROM @extschema@.host_dep_assignments d
		 WHERE d.abm_token_id = p_token AND d.deleted_at IS NULL AND d.needs_assign) THEN
		RETURN;
	END IF;
	-- the one lock rule with the application (src/coexist.c): its team
	-- moves mark assignments too; then the token, never waiting (another
	-- session holds it: nothing now, the next run goes on)
	PERFORM @extschema@.ade_lock_hosts();
	PERFORM FROM @extschema@.abm_tokens t WHERE t.id = p_token FOR UPDATE SKIP LOCKED;
	IF NOT FOUND THEN
		RETURN;
	END IF;
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
		   AND (m.profile_uuid IS NULL OR d.profile_uuid IS DISTINCT FROM m.profile_uuid)
		   -- a device with a profile of its own, or held, is not the scope's
		   AND NOT EXISTS (SELECT 1 FROM @extschema@.ade_device_pins y
							WHERE y.hardware_serial = d.hardware_serial);
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

	-- a held device (devices.sql) is never due, whatever marked it
	UPDATE @extschema@.host_dep_assignments d
	   SET needs_assign = false, updated_at = now()
	  FROM @extschema@.ade_device_pins y
	 WHERE y.profile IS NULL AND d.hardware_serial = y.hardware_serial
	   AND d.abm_token_id = p_token AND d.deleted_at IS NULL AND d.needs_assign;

	RETURN QUERY
	WITH due AS (
		-- the device's own profile (a pin) wins over its scope's
		SELECT d.hardware_serial, d.assign_sent_at, d.profile_uuid AS held,
			   CASE WHEN y.hardware_serial IS NOT NULL THEN md5(y.profile::text) ELSE m.profile_key END AS profile_key,
			   CASE WHEN y.hardware_serial IS NOT NULL THEN x.profile_uuid ELSE m.profile_uuid END AS profile_uuid
		  FROM @extschema@.host_dep_assignments d
		  LEFT JOIN @extschema@.hosts h ON h.id = d.host_id
		  LEFT JOIN @extschema@.ade_device_profiles(p_token) m
			ON m.team_id = coalesce(h.team_id, 0)
		   AND m.platform = coalesce(h.platform, @extschema@.ade_platform(d.device->>'device_family'), 'darwin')
		  LEFT JOIN @extschema@.ade_device_pins y ON y.hardware_serial = d.hardware_serial
		  LEFT JOIN @extschema@.ade_profile_definitions x
			ON x.token_id = p_token AND x.profile_key = md5(y.profile::text)
		 WHERE d.abm_token_id = p_token AND d.deleted_at IS NULL AND d.needs_assign
		   AND (d.retry_at IS NULL OR d.retry_at <= now())
		   AND CASE WHEN y.hardware_serial IS NOT NULL THEN y.profile IS NOT NULL
					ELSE m.profile IS NOT NULL END
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
	   AND m.profile IS NULL
	   AND NOT EXISTS (SELECT 1 FROM @extschema@.ade_device_pins y
						WHERE y.hardware_serial = d.hardware_serial);
	RETURN n;
END
$$;
COMMENT ON FUNCTION ade_unassignable(bigint) IS
	'internal: how many live devices of a token wait for a profile that no scope defines (-1: no scope defines any)';

-- Store ABM's answer to one PUT /profile/devices: every serial sent gets its
-- answer (missing from the answer: FAILED) and its cooldown; a SUCCESS
-- means it holds the profile now.  A device whose host moved to another
-- team (or whose profile changed) while ABM answered stays due: what it
-- holds is not what it gets now.
CREATE FUNCTION ade_store_answers(p_token bigint, p_uuid text, p_serials text[],
	p_answer jsonb, p_retry_after int, p_failed_retry int,
	OUT assigned int, OUT failed int, OUT throttled boolean)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	-- the one lock rule with the application (src/coexist.c)
	SELECT @extschema@.ade_lock_hosts();
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
			   needs_assign = NOT coalesce(y.profile IS NULL AND y.hardware_serial IS NOT NULL, false)
							  AND (a.resp IN ('FAILED', 'THROTTLED')
								   OR (a.resp = 'SUCCESS'
									   AND CASE WHEN y.hardware_serial IS NOT NULL THEN x.profile_uuid
												ELSE m.profile_uuid END IS DISTINCT FROM p_uuid)),
			   retry_at = CASE a.resp
							WHEN 'FAILED' THEN now() + make_interval(secs => p_failed_retry)
							WHEN 'THROTTLED' THEN now() + make_interval(secs => coalesce(p_retry_after, 86400))
						  END,
			   updated_at = now()
		  FROM ans a
		  LEFT JOIN @extschema@.host_dep_assignments d2
			ON d2.hardware_serial = a.serial AND d2.abm_token_id = p_token
		  LEFT JOIN @extschema@.hosts h ON h.id = d2.host_id
		  LEFT JOIN @extschema@.ade_device_profiles(p_token) m
			ON m.team_id = coalesce(h.team_id, 0)
		   AND m.platform = coalesce(h.platform, @extschema@.ade_platform(d2.device->>'device_family'), 'darwin')
		  LEFT JOIN @extschema@.ade_device_pins y ON y.hardware_serial = a.serial
		  LEFT JOIN @extschema@.ade_profile_definitions x
			ON x.token_id = p_token AND x.profile_key = md5(y.profile::text)
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
-- when to come back, so no device of the token is sent before then
-- (abm_tokens.assign_not_before, read by ade_assign_candidates()).
CREATE FUNCTION ade_batch_unanswered(p_token bigint, p_serials text[], p_retry_after int)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	-- the one lock rule with the application (src/coexist.c)
	SELECT @extschema@.ade_lock_hosts();
	UPDATE @extschema@.host_dep_assignments d
	   SET assign_sent_at = now(), updated_at = now()
	 WHERE d.hardware_serial = ANY (p_serials) AND d.abm_token_id = p_token;
	UPDATE @extschema@.abm_tokens t
	   SET assign_not_before = now() + make_interval(secs => p_retry_after), updated_at = now()
	 WHERE p_retry_after IS NOT NULL AND t.id = p_token;
$$;
COMMENT ON FUNCTION ade_batch_unanswered(bigint, text[], int) IS
	'internal: marks the devices of a PUT /profile/devices that got no answer as sent, to the back of the queue; after a long 429, the token''s devices wait';

-- What ABM refused of the profiles this token's devices get now, in words,
-- or NULL (for ade_status.attention, which ade_reader reads: SECURITY
-- DEFINER, as it reads the profiles).
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

REVOKE ALL ON FUNCTION ade_set_profile(jsonb, bigint, text, bigint), ade_check_profile(jsonb), ade_profile_problem(bigint),
	ade_device_profiles(bigint), ade_assign_candidates(bigint), ade_unassignable(bigint),
	ade_store_answers(bigint, text, text[], jsonb, int, int),
	ade_batch_unanswered(bigint, text[], int), ade_profile_scope(bigint, text, bigint),
	ade_clear_profile(bigint, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ade_profile_problem(bigint) TO ade_reader;
