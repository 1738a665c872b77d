/*-------------------------------------------------------------------------
 *
 * ade--0.2--0.3.sql
 *		Upgrade of the ade extension from 0.2 to 0.3: teams.
 *
 * - teams (id, name); each token names a default team for macOS, iOS and
 *   iPadOS (ade_set_default_teams()); tvOS and visionOS follow iOS.
 * - hosts.team_id: a host the sync creates (or the delete trigger makes
 *   again) lands in its token's default team for its platform and keeps its
 *   team afterwards, moves between tokens included.
 * - A team can have a profile (ade_set_profile(profile, team_id => ...)); the
 *   profile a device gets is, most specific first: its team's, (token,
 *   platform), token, platform, the built-in default.
 * - Moving a live host to a team with another profile marks it for the next
 *   sync (a trigger on hosts); deleting a team sets its hosts' and tokens'
 *   team to null, and their devices fall back to the next profile.
 * - ade_status.teams and the view ade_team_status count hosts per team.
 *
 * Never edit this file once released.
 *
 *-------------------------------------------------------------------------
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION ade UPDATE TO '0.3'" to load this file. \quit

CREATE TABLE teams (
	id				bigserial PRIMARY KEY,
	name			text NOT NULL UNIQUE,
	created_at		timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE teams IS 'teams of hosts; each token names a default team per platform';
SELECT pg_catalog.pg_extension_config_dump('teams', '');
SELECT pg_catalog.pg_extension_config_dump('teams_id_seq', '');
REVOKE ALL ON teams FROM PUBLIC;

ALTER TABLE abm_tokens
	ADD COLUMN macos_team_id bigint REFERENCES teams (id) ON DELETE SET NULL,
	ADD COLUMN ios_team_id bigint REFERENCES teams (id) ON DELETE SET NULL,
	ADD COLUMN ipados_team_id bigint REFERENCES teams (id) ON DELETE SET NULL;
-- hosts.team_id is checked by triggers rather than a foreign key: a foreign
-- key queues a check for every row the sync inserts, team or no team (a
-- quarter of a fetch page's time); these cost nothing for a host without one.
ALTER TABLE hosts ADD COLUMN team_id bigint;
CREATE INDEX hosts_team_idx ON hosts (team_id) WHERE team_id IS NOT NULL;

CREATE FUNCTION ade_hosts_check_team() RETURNS trigger
LANGUAGE plpgsql
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
CREATE TRIGGER ade_hosts_team_exists BEFORE INSERT OR UPDATE OF team_id ON hosts
	FOR EACH ROW WHEN (NEW.team_id IS NOT NULL)
	EXECUTE FUNCTION ade_hosts_check_team();

-- Deleting a team leaves its hosts with no team (as ON DELETE SET NULL would).
CREATE FUNCTION ade_teams_after_delete() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE @extschema@.hosts h SET team_id = NULL, updated_at = now()
	 WHERE h.team_id IN (SELECT o.id FROM ade_deleted_teams o);
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_teams_after_delete() IS 'trigger: the hosts of a deleted team have no team';
CREATE TRIGGER ade_teams_release_hosts AFTER DELETE ON teams
	REFERENCING OLD TABLE AS ade_deleted_teams
	FOR EACH STATEMENT EXECUTE FUNCTION ade_teams_after_delete();
ALTER TABLE ade_profiles ADD CONSTRAINT ade_profiles_team_fk
	FOREIGN KEY (team_id) REFERENCES teams (id) ON DELETE CASCADE;

-- The profile each platform of a token gets (team profiles aside): one
-- probe of ade_profiles per platform, most specific first ((token,
-- platform), token, platform, the organisation default), then the built-in
-- default.  Same answer as 0.1's, in a third of the time: every page and
-- every run asks.
CREATE OR REPLACE FUNCTION ade_effective_profiles(p_token bigint)
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

-- Sets a token's default teams (null: no team); tvOS and visionOS follow iOS.
CREATE FUNCTION ade_set_default_teams(token_id bigint, macos bigint, ios bigint, ipados bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE @extschema@.abm_tokens t
	   SET macos_team_id = macos, ios_team_id = ios, ipados_team_id = ipados, updated_at = now()
	 WHERE t.id = ade_set_default_teams.token_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'abm token % does not exist', token_id USING ERRCODE = 'no_data_found';
	END IF;
END
$$;
COMMENT ON FUNCTION ade_set_default_teams(bigint, bigint, bigint, bigint) IS
	'sets the team a new host of this token lands in, per platform (tvOS and visionOS follow iOS)';

CREATE OR REPLACE FUNCTION ade_set_profile(profile jsonb, token_id bigint DEFAULT NULL,
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
	), tk AS (					-- the token's default teams
		SELECT t.macos_team_id, t.ios_team_id, t.ipados_team_id
		  FROM @extschema@.abm_tokens t WHERE t.id = p_token
	), tp AS (					-- team profiles, with their UUID for this token
		SELECT x.team_id, x.profile, md5(x.profile::text) AS profile_key, df.profile_uuid
		  FROM @extschema@.ade_profiles x
		  LEFT JOIN @extschema@.ade_profile_definitions df
			ON df.token_id = p_token AND df.profile_key = md5(x.profile::text)
		 WHERE x.team_id IS NOT NULL
	), plan0 AS (
		SELECT w.serial, w.rec, w.op_date, h.id AS host_id,
			   coalesce(@extschema@.ade_platform(w.rec->>'device_family'), h.platform, 'darwin') AS platform,
			   coalesce(w.rec->>'model', h.hardware_model) AS model,
			   d.assign_profile_response AS response,
			   d.abm_token_id AS prev_token, d.host_id AS prev_host, h.team_id AS host_team,
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
		  -- LATERAL with OFFSET 0 (not flattened into a join): one index
		  -- probe per record, never a hash of the whole table
		  LEFT JOIN LATERAL (SELECT * FROM @extschema@.host_dep_assignments x
							  WHERE x.hardware_serial = w.serial OFFSET 0) d ON true
		  LEFT JOIN LATERAL (SELECT * FROM @extschema@.hosts y
							  WHERE y.hardware_serial = w.serial OFFSET 0) h ON true
	), plan1 AS (
		-- a new host lands in its token's default team for its platform
		-- (tvOS and visionOS follow iOS); an existing host keeps its team
		SELECT p.*,
			   coalesce(p.host_team,
						CASE p.platform WHEN 'darwin' THEN tk.macos_team_id
										WHEN 'ipados' THEN tk.ipados_team_id
										ELSE tk.ios_team_id END) AS team_id
		  FROM plan0 p LEFT JOIN tk ON true
	), plan AS (
		-- rules 5, 6 and 10: does the device need our profile?  Ours is its
		-- team's when the team has one, else the platform's
		SELECT p.*, o.ours,
			   coalesce(p.rec->>'profile_uuid' = o.ours
						AND p.rec->>'profile_status' IN ('assigned', 'pushed'), false) AS has_ours,
			   CASE
				 WHEN p.act = 'added' THEN
					NOT coalesce(p.rec->>'profile_uuid' = o.ours
								 AND p.rec->>'profile_status' IN ('assigned', 'pushed'), false)
				 -- NOT_ACCESSIBLE waits until ABM shows a profile that is not ours
				 WHEN p.response = 'NOT_ACCESSIBLE' THEN
					coalesce(p.rec->>'profile_uuid', '') <> ''
					AND p.rec->>'profile_uuid' IS DISTINCT FROM o.ours
				 -- our own assignment echoed back as modified is not sent again
				 ELSE p.rec->>'profile_uuid' IS DISTINCT FROM o.ours
					  OR coalesce(p.rec->>'profile_status', 'empty') IN ('removed', 'empty')
			   END AS needs
		  FROM plan1 p
		  LEFT JOIN @extschema@.ade_effective_profiles(p_token) e ON e.platform = p.platform
		  LEFT JOIN tp ON tp.team_id = p.team_id
		  CROSS JOIN LATERAL (SELECT CASE WHEN tp.team_id IS NOT NULL THEN tp.profile_uuid
										  ELSE e.profile_uuid END AS ours) o
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

CREATE OR REPLACE FUNCTION ade_assign_candidates(p_token bigint)
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

CREATE OR REPLACE FUNCTION ade_unassignable(p_token bigint) RETURNS bigint
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

CREATE OR REPLACE FUNCTION ade_hosts_after_delete() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n int;
BEGIN
	WITH restored AS (
		INSERT INTO @extschema@.hosts (id, hardware_serial, hardware_model, platform,
									   team_id, created_at, updated_at)
		SELECT o.id, d.hardware_serial, x.model, x.platform,
			   CASE x.platform WHEN 'darwin' THEN t.macos_team_id
							   WHEN 'ipados' THEN t.ipados_team_id
							   ELSE t.ios_team_id END,
			   now(), now()
		  FROM ade_deleted_hosts o
		  JOIN @extschema@.host_dep_assignments d
			ON d.host_id = o.id AND d.deleted_at IS NULL
		  LEFT JOIN @extschema@.abm_tokens t ON t.id = d.abm_token_id
		  CROSS JOIN LATERAL (
			SELECT coalesce(d.device->>'model', o.hardware_model) AS model,
				   coalesce(@extschema@.ade_platform(d.device->>'device_family'), o.platform) AS platform) x
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
		INSERT INTO @extschema@.hosts (id, hardware_serial, hardware_model, platform, team_id)
		SELECT d.host_id, d.hardware_serial, d.device->>'model', x.platform,
			   CASE x.platform WHEN 'darwin' THEN t.macos_team_id
							   WHEN 'ipados' THEN t.ipados_team_id
							   ELSE t.ios_team_id END
		  FROM @extschema@.host_dep_assignments d
		  LEFT JOIN @extschema@.abm_tokens t ON t.id = d.abm_token_id
		  CROSS JOIN LATERAL (
			SELECT coalesce(@extschema@.ade_platform(d.device->>'device_family'), 'darwin') AS platform) x
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
	   END AS attention,
	   (SELECT jsonb_object_agg(coalesce(tm.name, '(no team)'), c.n)
		  FROM (SELECT h.team_id, count(*) AS n
				  FROM @extschema@.host_dep_assignments d
				  JOIN @extschema@.hosts h ON h.id OPERATOR(pg_catalog.=) d.host_id
				 WHERE d.abm_token_id OPERATOR(pg_catalog.=) t.id AND d.deleted_at IS NULL
				 GROUP BY h.team_id) c
		  LEFT JOIN @extschema@.teams tm ON tm.id OPERATOR(pg_catalog.=) c.team_id) AS teams
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



-- A live host moved to a team whose profile is another one: its device is
-- marked, and the next sync assigns the new profile from the database.  A
-- team deleted (its hosts' team set to null) is such a move too.  A row
-- trigger on team_id only, with a WHEN: the sync's own updates of hosts
-- never name team_id, and pay nothing for it.
CREATE FUNCTION ade_hosts_team_moved() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- the old team's profile; when the team is being deleted its profile is
	-- gone already: then the one its devices last got
	IF coalesce((SELECT md5(x.profile::text) FROM @extschema@.ade_profiles x WHERE x.team_id = OLD.team_id),
				(SELECT a.profile_key FROM @extschema@.ade_profile_applied a
				  WHERE a.platform = 'team:' || OLD.team_id AND a.profile_key IS NOT NULL LIMIT 1))
	   IS DISTINCT FROM
	   (SELECT md5(x.profile::text) FROM @extschema@.ade_profiles x WHERE x.team_id = NEW.team_id)
	THEN
		UPDATE @extschema@.host_dep_assignments d
		   SET needs_assign = true, updated_at = now()
		 WHERE d.host_id = NEW.id AND d.deleted_at IS NULL AND NOT d.needs_assign;
	END IF;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_hosts_team_moved() IS
	'trigger: a live host moved to a team with another profile is marked for assignment';

CREATE TRIGGER ade_team_moves AFTER UPDATE OF team_id ON hosts
	FOR EACH ROW WHEN (OLD.team_id IS DISTINCT FROM NEW.team_id)
	EXECUTE FUNCTION ade_hosts_team_moved();

-- Hosts per team, and what each team's devices get.
CREATE VIEW ade_team_status AS
SELECT tm.id AS team_id,
	   tm.name,
	   (SELECT count(*) FROM @extschema@.hosts h WHERE h.team_id OPERATOR(pg_catalog.=) tm.id) AS hosts,
	   (SELECT count(*) FROM @extschema@.hosts h JOIN @extschema@.host_dep_assignments d
			ON d.host_id OPERATOR(pg_catalog.=) h.id AND d.deleted_at IS NULL
		 WHERE h.team_id OPERATOR(pg_catalog.=) tm.id) AS ade_live,
	   (SELECT jsonb_object_agg(c.platform, c.n) FROM (
			SELECT h.platform, count(*) AS n FROM @extschema@.hosts h
			 WHERE h.team_id OPERATOR(pg_catalog.=) tm.id GROUP BY h.platform) c) AS by_platform,
	   (SELECT x.profile->>'profile_name' FROM @extschema@.ade_profiles x
		 WHERE x.team_id OPERATOR(pg_catalog.=) tm.id) AS profile_name
  FROM @extschema@.teams tm;
COMMENT ON VIEW ade_team_status IS 'one row per team: its hosts, its live ADE devices, by platform, and its profile';

REVOKE ALL ON ade_team_status FROM PUBLIC;
GRANT SELECT ON ade_team_status TO ade_reader;
REVOKE ALL ON FUNCTION ade_set_default_teams(bigint, bigint, bigint, bigint),
	ade_hosts_team_moved(), ade_hosts_check_team(), ade_teams_after_delete() FROM PUBLIC;
