/*-------------------------------------------------------------------------
 *
 * teams.sql
 *		Source of the ade install script: teams of hosts.
 *
 * Owns the rules of hosts.team_id: it names a team that exists (checked by
 * a trigger rather than a foreign key, which would queue a check for every
 * row the sync writes); deleting a team leaves its hosts with no team (as
 * ON DELETE SET NULL would); moving a live host to a team whose profile is
 * another one marks its device for the next sync; and each token's default
 * team per platform (ade_set_default_teams()).  Which profile a team's
 * devices get is profiles.sql; where a new host lands is sync.sql (the
 * page); a host made again keeps its team (hosts.sql).  Like those of
 * hosts.sql, the trigger functions run as the extension owner, so that an
 * application allowed to write hosts (or teams) needs nothing more.
 *
 * IDENTIFICATION
 *	  src/schema/teams.sql
 *
 *-------------------------------------------------------------------------
 */

CREATE FUNCTION ade_hosts_check_team() RETURNS trigger
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
CREATE TRIGGER ade_hosts_team_exists BEFORE INSERT OR UPDATE OF team_id ON hosts
	FOR EACH ROW WHEN (NEW.team_id IS NOT NULL)
	EXECUTE FUNCTION ade_hosts_check_team();

-- Deleting a team leaves its hosts with no team, and the tokens that named
-- it as a default with none there (as ON DELETE SET NULL would), as they
-- are now (ade_run_latest(), src/coexist.c), not as of the snapshot of a
-- REPEATABLE READ or SERIALIZABLE transaction: it would miss a host a page
-- put in the team since.  Not a foreign key from abm_tokens: the sync writes
-- the tokens' rows with every page, and a foreign key's action under those
-- levels fails on a row changed since the snapshot.
CREATE FUNCTION ade_teams_after_delete() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_ids jsonb := (SELECT pg_catalog.jsonb_agg(o.id) FROM ade_deleted_teams o);
BEGIN
	-- hosts as they are now too: under REPEATABLE READ, a host a page put
	-- in the team after the snapshot would keep it
	PERFORM @extschema@.ade_run_latest($q$
		UPDATE @extschema@.hosts h SET team_id = NULL, updated_at = pg_catalog.now()
		 WHERE h.team_id IN (SELECT e::bigint FROM pg_catalog.jsonb_array_elements_text($1) e)
		$q$::text, v_ids);
	PERFORM @extschema@.ade_run_latest($q$
		UPDATE @extschema@.abm_tokens t
		   SET macos_team_id = CASE WHEN t.macos_team_id = ANY (x.ids) THEN NULL ELSE t.macos_team_id END,
			   ios_team_id = CASE WHEN t.ios_team_id = ANY (x.ids) THEN NULL ELSE t.ios_team_id END,
			   ipados_team_id = CASE WHEN t.ipados_team_id = ANY (x.ids) THEN NULL ELSE t.ipados_team_id END,
			   updated_at = pg_catalog.now()
		  FROM (SELECT pg_catalog.array_agg(e::bigint) AS ids FROM pg_catalog.jsonb_array_elements_text($1) e) x
		 WHERE t.macos_team_id = ANY (x.ids) OR t.ios_team_id = ANY (x.ids) OR t.ipados_team_id = ANY (x.ids)
		$q$::text, v_ids);
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_teams_after_delete() IS
	'trigger: the hosts of a deleted team have no team, nor the tokens that named it as a default';
CREATE TRIGGER ade_teams_release_hosts AFTER DELETE ON teams
	REFERENCING OLD TABLE AS ade_deleted_teams
	FOR EACH STATEMENT EXECUTE FUNCTION ade_teams_after_delete();

-- TRUNCATE teams (CASCADE, by the owner: ade_profiles points at it) fires
-- no delete trigger: no host and no token keeps a team
CREATE FUNCTION ade_teams_after_truncate() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@.ade_run_latest($q$
		UPDATE @extschema@.hosts h SET team_id = NULL, updated_at = pg_catalog.now()
		 WHERE h.team_id IS NOT NULL
		$q$::text, NULL::jsonb);
	PERFORM @extschema@.ade_run_latest($q$
		UPDATE @extschema@.abm_tokens t
		   SET macos_team_id = NULL, ios_team_id = NULL, ipados_team_id = NULL, updated_at = pg_catalog.now()
		 WHERE t.macos_team_id IS NOT NULL OR t.ios_team_id IS NOT NULL OR t.ipados_team_id IS NOT NULL
		$q$::text, NULL::jsonb);
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_teams_after_truncate() IS
	'trigger: after TRUNCATE teams, no host and no token names a team';
CREATE TRIGGER ade_teams_truncated AFTER TRUNCATE ON teams
	FOR EACH STATEMENT EXECUTE FUNCTION ade_teams_after_truncate();

-- A team given another id: the tokens that named it as a default name the
-- new id (where a foreign key would have refused the change)
CREATE FUNCTION ade_teams_renumbered() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@.ade_run_latest($q$
		UPDATE @extschema@.abm_tokens t
		   SET macos_team_id = CASE WHEN t.macos_team_id = ($1->>'old')::bigint THEN ($1->>'new')::bigint ELSE t.macos_team_id END,
			   ios_team_id = CASE WHEN t.ios_team_id = ($1->>'old')::bigint THEN ($1->>'new')::bigint ELSE t.ios_team_id END,
			   ipados_team_id = CASE WHEN t.ipados_team_id = ($1->>'old')::bigint THEN ($1->>'new')::bigint ELSE t.ipados_team_id END,
			   updated_at = pg_catalog.now()
		 WHERE ($1->>'old')::bigint IN (t.macos_team_id, t.ios_team_id, t.ipados_team_id)
		$q$::text, pg_catalog.jsonb_build_object('old', OLD.id, 'new', NEW.id));
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_teams_renumbered() IS
	'trigger: the tokens that named a team as a default follow it to its new id';
CREATE TRIGGER ade_teams_renumbered AFTER UPDATE OF id ON teams
	FOR EACH ROW WHEN (OLD.id OPERATOR(pg_catalog.<>) NEW.id)
	EXECUTE FUNCTION ade_teams_renumbered();

-- A statement that deletes or updates teams takes hosts first (ROW
-- EXCLUSIVE, the lock it takes anyway to free a deleted team's hosts),
-- before any team's row or any row its foreign keys reach (abm_tokens'
-- default teams): the lock order a sync keeps too (src/coexist.c).
CREATE FUNCTION ade_teams_lock_hosts() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	LOCK TABLE @extschema@.hosts IN ROW EXCLUSIVE MODE;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_teams_lock_hosts() IS
	'trigger: a statement that deletes or updates teams takes hosts first, as a sync does';
CREATE TRIGGER ade_teams_lock_hosts BEFORE DELETE OR UPDATE ON teams
	FOR EACH STATEMENT EXECUTE FUNCTION ade_teams_lock_hosts();

-- Sets a token's default teams (null: no team); tvOS and visionOS follow iOS.
CREATE FUNCTION ade_set_default_teams(token_id bigint, macos bigint, ios bigint, ipados bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_missing bigint;
	v_kept bigint;
BEGIN
	IF token_id IS NULL THEN
		RAISE EXCEPTION 'token_id is null' USING ERRCODE = 'null_value_not_allowed',
			HINT = 'SELECT id, org_name FROM abm_tokens lists the tokens.';
	END IF;
	-- the teams exist, and stay until this commits (what a foreign key would
	-- check: ade_teams_after_delete() says why there is none)
	PERFORM FROM @extschema@.teams tm WHERE tm.id IN (macos, ios, ipados) FOR KEY SHARE;
	SELECT min(v) INTO v_missing FROM unnest(ARRAY[macos, ios, ipados]) v
	 WHERE v IS NOT NULL AND NOT EXISTS (SELECT 1 FROM @extschema@.teams tm WHERE tm.id = v);
	IF v_missing IS NOT NULL THEN
		RAISE EXCEPTION 'team % does not exist', v_missing
			USING ERRCODE = 'foreign_key_violation',
				  HINT = 'SELECT id, name FROM teams lists the teams.';
	END IF;
	UPDATE @extschema@.abm_tokens t
	   SET macos_team_id = macos, ios_team_id = ios, ipados_team_id = ipados, updated_at = now()
	 WHERE t.id = ade_set_default_teams.token_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'abm token % does not exist', token_id USING ERRCODE = 'no_data_found',
			HINT = 'SELECT id, org_name FROM abm_tokens lists the tokens.';
	END IF;
	-- hosts keep their team: say so, rather than seem to have moved them
	SELECT count(*) INTO v_kept FROM @extschema@.host_dep_assignments d
	 WHERE d.abm_token_id = ade_set_default_teams.token_id AND d.deleted_at IS NULL;
	IF v_kept > 0 THEN
		RAISE NOTICE 'the % hosts this token has keep their teams: default teams apply to the hosts the sync creates from now on', v_kept
			USING HINT = 'UPDATE hosts SET team_id = ... moves hosts that exist; their new team''s profile is assigned on the next sync.';
	END IF;
END
$$;
COMMENT ON FUNCTION ade_set_default_teams(bigint, bigint, bigint, bigint) IS
	'sets the team a new host of this token lands in, per platform (tvOS and visionOS follow iOS)';

-- A live host moved to another team (by hand, or because its team was
-- deleted) may need another profile: its device is marked, and the next
-- sync sends it the profile of its new team unless it holds it already
-- (ade_assign_candidates()), from the database, without a re-fetch.  A
-- device that was NOT_ACCESSIBLE waits for ABM to report it again.  A row
-- trigger on team_id only, with a WHEN: the sync's own updates of hosts
-- never name team_id, and pay nothing for it.
CREATE FUNCTION ade_hosts_team_moved() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- as of the latest snapshot (src/coexist.c): under REPEATABLE READ the
	-- application's may predate an assignment batch that changed the row
	PERFORM @extschema@.ade_run_latest($q$
		UPDATE @extschema@.host_dep_assignments d
		   SET needs_assign = true, updated_at = pg_catalog.now()
		 WHERE d.host_id = ($1->>'id')::bigint AND d.deleted_at IS NULL AND NOT d.needs_assign
		   AND d.assign_profile_response IS DISTINCT FROM 'NOT_ACCESSIBLE'
		$q$::text, pg_catalog.jsonb_build_object('id', NEW.id));
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_hosts_team_moved() IS
	'trigger: a live host moved to another team is marked, to get its new team''s profile';

-- (WHEN is parsed with the search_path of CREATE EXTENSION: its operator is
-- qualified, and IS DISTINCT FROM, which has no OPERATOR() form, is spelt out)
CREATE TRIGGER ade_team_moves AFTER UPDATE OF team_id ON hosts
	FOR EACH ROW WHEN (NOT coalesce(OLD.team_id OPERATOR(pg_catalog.=) NEW.team_id,
									OLD.team_id IS NULL AND NEW.team_id IS NULL))
	EXECUTE FUNCTION ade_hosts_team_moved();

REVOKE ALL ON FUNCTION ade_set_default_teams(bigint, bigint, bigint, bigint),
	ade_hosts_team_moved(), ade_hosts_check_team(), ade_teams_after_delete(),
	ade_teams_lock_hosts(), ade_teams_renumbered(), ade_teams_after_truncate() FROM PUBLIC;
