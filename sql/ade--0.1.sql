/*-------------------------------------------------------------------------
 *
 * ade--0.1.sql
 *		Install script of the ade extension, version 0.1.
 *
 * Owns the schema: the tables (abm_tokens and its secrets, hosts,
 * host_dep_assignments, ade_sync_runs, the key pair), the ade_status view,
 * the host-delete trigger, the SQL-side apply functions that do the row work
 * of one ABM page in one statement, and the SQL declarations of the C
 * functions.  The C side (src/) does HTTP, OAuth and cryptography only.
 *
 * Privileges: every table is owned by the installing superuser and nothing
 * is granted to PUBLIC.  Secrets (token credentials, ABM session tokens, the
 * private key) live in ade_token_secrets and ade_keypair, which no role but
 * the owner can read.  The role ade_reader may read hosts,
 * host_dep_assignments, ade_status and ade_sync_runs, and nothing else.
 *
 * Never edit this file once released: ship ade--0.1--<next>.sql instead.
 *
 *-------------------------------------------------------------------------
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION ade" to load this file. \quit

-- ---------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------

-- One row per ABM server token (one MDM server in one organisation).
CREATE TABLE abm_tokens (
	id				bigserial PRIMARY KEY,
	consumer_key	text NOT NULL UNIQUE,
	org_name		text,
	apple_id		text,			-- the account's admin_id
	server_name		text,
	server_uuid		text,
	org_email		text,
	org_type		text,
	renew_at		timestamptz,	-- the token's access_token_expiry
	terms_expired	boolean NOT NULL DEFAULT false,
	token_invalid	boolean NOT NULL DEFAULT false,
	mode			text NOT NULL DEFAULT 'fetch' CHECK (mode IN ('fetch', 'sync')),
	cursor			text,			-- ABM's cursor for the mode above
	fetch_started_at timestamptz,
	fetched_until	timestamptz,
	last_sync_at	timestamptz,
	last_error		text,
	assign_profiles boolean NOT NULL DEFAULT true,
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE abm_tokens IS 'ABM server tokens (no secrets: those are in ade_token_secrets)';

-- The secrets of each token, and its cached ABM session.  Owner only, and
-- sealed (AES-256-GCM) with a key file of the data directory (src/vault.c):
-- a dump alone does not carry a working token.
CREATE TABLE ade_token_secrets (
	token_id		bigint PRIMARY KEY REFERENCES abm_tokens (id) ON DELETE CASCADE,
	consumer_secret text NOT NULL,
	access_token	text NOT NULL,
	access_secret	text NOT NULL,
	session_token	text,
	session_at		timestamptz
);
COMMENT ON TABLE ade_token_secrets IS 'ABM token secrets and session tokens; readable by the extension owner only';

-- The MDM server key pair whose certificate is uploaded to ABM.  Owner only.
CREATE TABLE ade_keypair (
	id				int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
	private_key		text NOT NULL,	-- PEM, sealed like the token secrets
	certificate		text NOT NULL,	-- PEM
	created_at		timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ade_keypair IS 'the MDM server key pair; readable by the extension owner only';

CREATE TABLE hosts (
	id				bigserial PRIMARY KEY,
	hardware_serial text NOT NULL UNIQUE,
	hardware_model	text,
	platform		text NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE hosts IS 'one row per device; ADE devices are created by ade_sync()';

-- One row per host that ABM has listed.  No foreign key to hosts: the
-- host-delete trigger re-creates hosts with the same id, and soft-deleted
-- assignments outlive their host.  The serial is kept so that a device whose
-- host row is gone is matched again when ABM lists it anew.
CREATE TABLE host_dep_assignments (
	host_id			bigint PRIMARY KEY,
	hardware_serial text NOT NULL UNIQUE,
	abm_token_id	bigint NOT NULL,
	added_at		timestamptz NOT NULL DEFAULT now(),
	deleted_at		timestamptz,
	profile_uuid	text,
	assign_profile_response text CHECK (assign_profile_response IN
						('SUCCESS', 'NOT_ACCESSIBLE', 'FAILED', 'THROTTLED')),
	response_updated_at timestamptz,
	retry_at		timestamptz,	-- when a FAILED/THROTTLED assignment is due again
	needs_assign	boolean NOT NULL DEFAULT false,
	device			jsonb,			-- the last device record from ABM
	op_date			timestamptz,	-- op_date of that record
	updated_at		timestamptz NOT NULL DEFAULT now()
);
-- the devices that wait for a profile: what every run looks at
CREATE INDEX host_dep_assignments_due_idx ON host_dep_assignments (abm_token_id, retry_at)
	WHERE needs_assign AND deleted_at IS NULL;
COMMENT ON TABLE host_dep_assignments IS 'ADE state of each device: held by which token, live or soft-deleted, profile answer';

-- One row per token per committed ade_sync() run.
CREATE TABLE ade_sync_runs (
	id				bigserial PRIMARY KEY,
	token_id		bigint NOT NULL,
	org_name		text,
	mode			text,
	pages			int NOT NULL DEFAULT 0,
	added			int NOT NULL DEFAULT 0,
	modified		int NOT NULL DEFAULT 0,
	deleted			int NOT NULL DEFAULT 0,
	skipped			int NOT NULL DEFAULT 0,
	assigned		int NOT NULL DEFAULT 0,
	failed			int NOT NULL DEFAULT 0,
	requests		int NOT NULL DEFAULT 0,
	started_at		timestamptz NOT NULL,
	finished_at		timestamptz NOT NULL DEFAULT clock_timestamp(),
	duration_ms		double precision,
	error			text,
	note			text
);
CREATE INDEX ade_sync_runs_token_idx ON ade_sync_runs (token_id, started_at);
CREATE INDEX ade_sync_runs_started_idx ON ade_sync_runs (started_at);
COMMENT ON TABLE ade_sync_runs IS 'history: one row per token per committed ade_sync() run';

-- Enrollment profiles (Apple's profile object) per scope; all scope columns
-- null = the organisation-wide default.  team_id works once teams exist.
CREATE TABLE ade_profiles (
	id				bigserial PRIMARY KEY,
	token_id		bigint REFERENCES abm_tokens (id) ON DELETE CASCADE,
	platform		text CHECK (platform IN ('darwin', 'ios', 'ipados', 'tvos', 'visionos')),
	team_id			bigint,
	profile			jsonb NOT NULL,
	updated_at		timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT ade_profiles_scope UNIQUE NULLS NOT DISTINCT (token_id, platform, team_id)
);
COMMENT ON TABLE ade_profiles IS 'enrollment profiles by scope (token, platform, team); set with ade_set_profile()';

-- Each (profile, token) is defined once at Apple: POST /profile -> profile_uuid.
-- A changed profile has another key and is defined again.
CREATE TABLE ade_profile_definitions (
	token_id		bigint NOT NULL REFERENCES abm_tokens (id) ON DELETE CASCADE,
	profile_key		text NOT NULL,	-- md5 of the profile's jsonb text
	profile_uuid	text NOT NULL,
	defined_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (token_id, profile_key)
);
COMMENT ON TABLE ade_profile_definitions IS 'the profile_uuid Apple gave each (profile, token)';

-- The profile key that applied to each (token, platform) at the last run: a
-- change (ade_set_profile, ade.enroll_url) marks the devices it applies to.
CREATE TABLE ade_profile_applied (
	token_id		bigint NOT NULL REFERENCES abm_tokens (id) ON DELETE CASCADE,
	platform		text NOT NULL,
	profile_key		text,
	PRIMARY KEY (token_id, platform)
);
COMMENT ON TABLE ade_profile_applied IS 'internal: the profile that applied to each token and platform at its last run';

SELECT pg_catalog.pg_extension_config_dump('abm_tokens', '');
SELECT pg_catalog.pg_extension_config_dump('abm_tokens_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ade_token_secrets', '');
SELECT pg_catalog.pg_extension_config_dump('ade_keypair', '');
SELECT pg_catalog.pg_extension_config_dump('hosts', '');
SELECT pg_catalog.pg_extension_config_dump('hosts_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('host_dep_assignments', '');
SELECT pg_catalog.pg_extension_config_dump('ade_sync_runs', '');
SELECT pg_catalog.pg_extension_config_dump('ade_sync_runs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ade_profiles', '');
SELECT pg_catalog.pg_extension_config_dump('ade_profiles_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ade_profile_definitions', '');
SELECT pg_catalog.pg_extension_config_dump('ade_profile_applied', '');

-- ---------------------------------------------------------------------
-- Status view: one row per token, no secret
-- ---------------------------------------------------------------------
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
	   coalesce(a.not_accessible, 0) AS not_accessible
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
COMMENT ON VIEW ade_status IS 'one row per ABM token: its state and device counts, no secret';

-- ---------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'ade_reader') THEN
		CREATE ROLE ade_reader NOLOGIN;
	END IF;
END
$$;

REVOKE ALL ON abm_tokens, ade_token_secrets, ade_keypair, hosts,
	host_dep_assignments, ade_sync_runs, ade_status, ade_profiles,
	ade_profile_definitions, ade_profile_applied FROM PUBLIC;
GRANT SELECT ON hosts, host_dep_assignments, ade_status, ade_sync_runs TO ade_reader;

-- ---------------------------------------------------------------------
-- C functions (src/).  Their queries name the extension's objects with its
-- schema; the pinned search_path keeps a hostile function or operator in
-- another schema from standing in for a built-in one.
-- ---------------------------------------------------------------------
CREATE FUNCTION ade_public_key() RETURNS text
	AS 'MODULE_PATHNAME', 'ade_public_key' LANGUAGE C STRICT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_public_key() IS
	'PEM certificate of the MDM server key pair to upload to ABM; generated on first call';

CREATE FUNCTION ade_import_key(private_key text, certificate text DEFAULT NULL) RETURNS text
	AS 'MODULE_PATHNAME', 'ade_import_key' LANGUAGE C VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_import_key(text, text) IS
	'replaces the MDM server key pair with a PEM private key (and its certificate, else a new self-signed one); returns the certificate';

CREATE FUNCTION ade_add_token(token bytea) RETURNS bigint
	AS 'MODULE_PATHNAME', 'ade_add_token' LANGUAGE C STRICT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_add_token(bytea) IS
	'decrypts an ABM server token (.p7m), checks it with GET /account, stores it; the same consumer_key renews in place';

CREATE FUNCTION ade_refresh_account(token_id bigint) RETURNS void
	AS 'MODULE_PATHNAME', 'ade_refresh_account' LANGUAGE C STRICT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_refresh_account(bigint) IS
	'calls GET /account for a stored token and updates org_name, apple_id, server_name';

CREATE FUNCTION ade_rotate_secret_key() RETURNS text
	AS 'MODULE_PATHNAME', 'ade_rotate_secret_key' LANGUAGE C STRICT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_rotate_secret_key() IS
	'makes a new secret key file in the data directory and re-encrypts every stored secret with it; returns its id';

CREATE FUNCTION ade_oauth_signature(method text, url text, consumer_key text,
	consumer_secret text, token text, token_secret text, "timestamp" bigint, nonce text)
	RETURNS text
	AS 'MODULE_PATHNAME', 'ade_oauth_signature' LANGUAGE C STRICT IMMUTABLE;
COMMENT ON FUNCTION ade_oauth_signature(text, text, text, text, text, text, bigint, text) IS
	'OAuth 1.0a HMAC-SHA1 signature of a request without parameters, as sent to ABM (a pure function, for tests)';

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
	AS 'MODULE_PATHNAME', 'ade_sync_one' LANGUAGE C STRICT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_sync(bigint) IS 'syncs one ABM token';

-- ---------------------------------------------------------------------
-- SQL functions
-- ---------------------------------------------------------------------
CREATE FUNCTION ade_remove_token(token_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE @extschema@.host_dep_assignments d
	   SET deleted_at = now(), needs_assign = false, updated_at = now()
	 WHERE d.abm_token_id = ade_remove_token.token_id AND d.deleted_at IS NULL;
	DELETE FROM @extschema@.abm_tokens t WHERE t.id = ade_remove_token.token_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'abm token % does not exist', ade_remove_token.token_id
			USING ERRCODE = 'no_data_found';
	END IF;
END
$$;
COMMENT ON FUNCTION ade_remove_token(bigint) IS
	'deletes a token with its secrets and session; its live assignments become soft-deleted';

CREATE FUNCTION ade_set_profile(profile jsonb, token_id bigint DEFAULT NULL,
	platform text DEFAULT NULL, team_id bigint DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF team_id IS NOT NULL THEN
		RAISE EXCEPTION 'team profiles are not available yet'
			USING ERRCODE = 'feature_not_supported';
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

-- ---------------------------------------------------------------------
-- Row work of the sync (called by src/sync.c, one statement per page)
-- ---------------------------------------------------------------------

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

-- The profile each platform of a token gets, most specific first:
-- (token, platform), token, platform, the organisation default, the built-in
-- default (when ade.enroll_url is set); with its key and, once defined at
-- Apple for this token, its profile_uuid.
CREATE FUNCTION ade_effective_profiles(p_token bigint)
RETURNS TABLE (platform text, profile jsonb, profile_key text, profile_uuid text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- plpgsql, not sql: its plan is kept across calls (every page calls it)
	RETURN QUERY
	WITH plat(platform) AS (
		VALUES ('darwin'), ('ios'), ('ipados'), ('tvos'), ('visionos')
	), eff AS (
		SELECT p.platform, coalesce(
			(SELECT x.profile FROM @extschema@.ade_profiles x
			  WHERE x.token_id = p_token AND x.platform = p.platform AND x.team_id IS NULL),
			(SELECT x.profile FROM @extschema@.ade_profiles x
			  WHERE x.token_id = p_token AND x.platform IS NULL AND x.team_id IS NULL),
			(SELECT x.profile FROM @extschema@.ade_profiles x
			  WHERE x.token_id IS NULL AND x.platform = p.platform AND x.team_id IS NULL),
			(SELECT x.profile FROM @extschema@.ade_profiles x
			  WHERE x.token_id IS NULL AND x.platform IS NULL AND x.team_id IS NULL),
			CASE WHEN coalesce(current_setting('ade.enroll_url', true), '') <> '' THEN
				jsonb_build_object('profile_name', 'Automatic enrollment',
								   'url', current_setting('ade.enroll_url'),
								   'is_supervised', true,
								   'is_mdm_removable', false,
								   'await_device_configured', true)
			END) AS profile
		  FROM plat p
	)
	SELECT e.platform, e.profile, md5(e.profile::text), d.profile_uuid
	  FROM eff e
	  LEFT JOIN @extschema@.ade_profile_definitions d
		ON d.token_id = p_token AND d.profile_key = md5(e.profile::text);
END
$$;
COMMENT ON FUNCTION ade_effective_profiles(bigint) IS
	'the enrollment profile each platform of a token gets, and its profile_uuid once defined';

-- One ABM page, applied in one statement: sync rules 4 to 8, and the token's
-- cursor and mode stored with the page's rows.
--   p_fetch: the page came from a full fetch (every record counts as added)
--   p_devices NULL: only the cursor and mode change
CREATE FUNCTION ade_apply_page(p_token bigint, p_devices jsonb, p_fetch boolean,
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
	  INTO added, modified, deleted, skipped;
END
$$;
COMMENT ON FUNCTION ade_apply_page(bigint, jsonb, boolean, text, text, text) IS
	'internal: applies one ABM page (sync rules 4-8) and stores the cursor, in one statement';

-- ---------------------------------------------------------------------
-- Profile assignment (rule 10; called by src/assign.c)
-- ---------------------------------------------------------------------

-- The live devices of a token that are due an assignment, with the profile
-- each gets.  First, when the profile that applies to a platform changed
-- since the last run, the devices holding an older profile of ours are
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
	SELECT array_agg(e.platform) INTO v_changed
	  FROM @extschema@.ade_effective_profiles(p_token) e
	  LEFT JOIN @extschema@.ade_profile_applied a
		ON a.token_id = p_token AND a.platform = e.platform
	 WHERE a.profile_key IS DISTINCT FROM e.profile_key;
	IF v_changed IS NOT NULL THEN
		-- rare: a profile changed; mark who holds an older one of ours
		UPDATE @extschema@.host_dep_assignments d
		   SET needs_assign = true, updated_at = now()
		  FROM @extschema@.hosts h, @extschema@.ade_effective_profiles(p_token) e
		 WHERE d.abm_token_id = p_token AND d.deleted_at IS NULL AND NOT d.needs_assign
		   AND d.assign_profile_response = 'SUCCESS'
		   AND h.id = d.host_id AND h.platform = e.platform
		   AND e.platform = ANY (v_changed) AND e.profile IS NOT NULL
		   AND d.profile_uuid IS DISTINCT FROM e.profile_uuid;
		INSERT INTO @extschema@.ade_profile_applied AS a (token_id, platform, profile_key)
		SELECT p_token, e.platform, e.profile_key
		  FROM @extschema@.ade_effective_profiles(p_token) e
		 WHERE e.platform = ANY (v_changed)
		ON CONFLICT (token_id, platform) DO UPDATE SET profile_key = excluded.profile_key;
	END IF;

	RETURN QUERY
	WITH eff AS (
		SELECT * FROM @extschema@.ade_effective_profiles(p_token) x WHERE x.profile IS NOT NULL
	)
	SELECT d.hardware_serial, e.profile_key, e.profile, e.profile_uuid
	  FROM @extschema@.host_dep_assignments d
	  LEFT JOIN @extschema@.hosts h ON h.id = d.host_id
	  JOIN eff e
		ON e.platform = coalesce(h.platform, @extschema@.ade_platform(d.device->>'device_family'), 'darwin')
	 WHERE d.abm_token_id = p_token AND d.deleted_at IS NULL AND d.needs_assign
	   AND (d.retry_at IS NULL OR d.retry_at <= now())
	   AND EXISTS (SELECT 1 FROM eff)
	 ORDER BY e.profile_key, d.hardware_serial;
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
	ELSIF cardinality(v_none) = 5 THEN
		-- no profile at all (the usual case before set-up): every device
		-- waits; not counted, so that a run stays cheap at any size
		RETURN -1;
	ELSE
		SELECT count(*) INTO n
		  FROM @extschema@.host_dep_assignments d
		  LEFT JOIN @extschema@.hosts h ON h.id = d.host_id
		 WHERE d.abm_token_id = p_token AND d.needs_assign AND d.deleted_at IS NULL
		   AND coalesce(h.platform, @extschema@.ade_platform(d.device->>'device_family'), 'darwin') = ANY (v_none);
	END IF;
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

-- The end of one token's run: its state and its history row.
CREATE FUNCTION ade_finish_run(p_token bigint, p_mode text, p_pages int,
	p_added int, p_modified int, p_deleted int, p_skipped int, p_assigned int,
	p_failed int, p_requests int, p_started_at timestamptz, p_error text,
	p_kind text, p_busy boolean, p_note text,
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
		finished_at, duration_ms, error, note)
	VALUES (p_token, org_name, mode, p_pages, p_added, p_modified, p_deleted,
		p_skipped, p_assigned, p_failed, p_requests, p_started_at, clock_timestamp(),
		extract(epoch FROM clock_timestamp() - p_started_at) * 1000, p_error, p_note);
END
$$;
COMMENT ON FUNCTION ade_finish_run(bigint, text, int, int, int, int, int, int, int, int, timestamptz, text, text, boolean, text) IS
	'internal: records the end of one token''s run on the token and in ade_sync_runs';

-- ---------------------------------------------------------------------
-- The special case: deleting a host whose assignment is live leaves a host
-- row for that serial again, with the same id, as if just ingested.
-- ---------------------------------------------------------------------
CREATE FUNCTION ade_hosts_after_delete() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO @extschema@.hosts (id, hardware_serial, hardware_model, platform,
								   created_at, updated_at)
	SELECT o.id, d.hardware_serial,
		   coalesce(d.device->>'model', o.hardware_model),
		   coalesce(@extschema@.ade_platform(d.device->>'device_family'), o.platform),
		   now(), now()
	  FROM ade_deleted_hosts o
	  JOIN @extschema@.host_dep_assignments d
		ON d.host_id = o.id AND d.deleted_at IS NULL
	 ORDER BY o.id;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_hosts_after_delete() IS
	'trigger: re-creates deleted hosts whose ADE assignment is live (same id, data of the last ABM record)';

CREATE TRIGGER ade_keep_live_hosts AFTER DELETE ON hosts
	REFERENCING OLD TABLE AS ade_deleted_hosts
	FOR EACH STATEMENT EXECUTE FUNCTION ade_hosts_after_delete();

-- TRUNCATE fires no DELETE trigger: re-create every live-assigned host.
CREATE FUNCTION ade_hosts_after_truncate() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO @extschema@.hosts (id, hardware_serial, hardware_model, platform)
	SELECT d.host_id, d.hardware_serial, d.device->>'model',
		   coalesce(@extschema@.ade_platform(d.device->>'device_family'), 'darwin')
	  FROM @extschema@.host_dep_assignments d
	 WHERE d.deleted_at IS NULL
	 ORDER BY d.host_id;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_hosts_after_truncate() IS
	'trigger: after TRUNCATE hosts, re-creates the hosts whose ADE assignment is live';

CREATE TRIGGER ade_keep_live_hosts_truncate AFTER TRUNCATE ON hosts
	FOR EACH STATEMENT EXECUTE FUNCTION ade_hosts_after_truncate();

-- ---------------------------------------------------------------------
-- pg_cron
-- ---------------------------------------------------------------------

-- Registers (idempotently) the job ade_sync.  It also creates, outside the
-- extension, an sql_drop event trigger that unschedules the job when the
-- extension is dropped (an event trigger that belongs to the extension would
-- not fire then).
CREATE FUNCTION ade_schedule(schedule text DEFAULT '* * * * *') RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	jid bigint;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
		RAISE EXCEPTION 'pg_cron is not installed in this database'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, restart, then CREATE EXTENSION pg_cron.';
	END IF;
	EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO jid
		USING 'ade_sync', schedule, format('SELECT %I.ade_sync()', '@extschema@');

	EXECUTE format($f$
		CREATE OR REPLACE FUNCTION %I.ade_cron_cleanup() RETURNS event_trigger
		LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $body$
		BEGIN
			IF EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects()
						WHERE object_type = 'extension' AND object_identity = 'ade') THEN
				PERFORM cron.unschedule(j.jobid) FROM cron.job j WHERE j.jobname = 'ade_sync';
				DROP EVENT TRIGGER ade_cron_cleanup;
				DROP FUNCTION %I.ade_cron_cleanup();
			END IF;
		END
		$body$ $f$, '@extschema@', '@extschema@');
	IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'ade_cron_cleanup') THEN
		EXECUTE format('CREATE EVENT TRIGGER ade_cron_cleanup ON sql_drop EXECUTE FUNCTION %I.ade_cron_cleanup()',
					   '@extschema@');
	END IF;
	RETURN jid;
END
$$;
COMMENT ON FUNCTION ade_schedule(text) IS
	'registers the pg_cron job ade_sync (SELECT ade_sync(), every minute by default); idempotent';

CREATE FUNCTION ade_unschedule() RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	found_job boolean := false;
BEGIN
	IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
		EXECUTE 'SELECT count(cron.unschedule(j.jobid)) > 0 FROM cron.job j WHERE j.jobname = $1'
			INTO found_job USING 'ade_sync';
	END IF;
	IF EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'ade_cron_cleanup') THEN
		EXECUTE 'DROP EVENT TRIGGER ade_cron_cleanup';
	END IF;
	IF to_regprocedure(format('%I.ade_cron_cleanup()', '@extschema@')) IS NOT NULL THEN
		EXECUTE format('DROP FUNCTION %I.ade_cron_cleanup()', '@extschema@');
	END IF;
	RETURN found_job;
END
$$;
COMMENT ON FUNCTION ade_unschedule() IS 'removes the pg_cron job ade_sync; false when there was none';

-- Everything that touches secrets or ABM is for the owner (and whoever the
-- owner grants it to) only.
REVOKE ALL ON FUNCTION ade_public_key(), ade_import_key(text, text), ade_rotate_secret_key(),
	ade_add_token(bytea), ade_refresh_account(bigint), ade_sync(),
	ade_sync(bigint), ade_remove_token(bigint),
	ade_set_profile(jsonb, bigint, text, bigint), ade_schedule(text), ade_unschedule(),
	ade_apply_page(bigint, jsonb, boolean, text, text, text),
	ade_effective_profiles(bigint), ade_assign_candidates(bigint), ade_unassignable(bigint),
	ade_store_answers(bigint, text, text[], jsonb, int, int),
	ade_finish_run(bigint, text, int, int, int, int, int, int, int, int, timestamptz, text, text, boolean, text)
	FROM PUBLIC;
