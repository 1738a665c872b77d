/*-------------------------------------------------------------------------
 *
 * ade--0.4--0.5.sql
 *		Upgrade of the ade extension from 0.4 to 0.5 (in development).
 *
 * Brings a 0.4 installation to exactly what a fresh install of 0.5 creates
 * (test/t/06_install_equals_upgrade.sql proves it).  Every schema change of
 * 0.5 goes into the sources (src/schema/) and into this script.
 *
 * Never edit this file once released.
 *
 *-------------------------------------------------------------------------
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION ade UPDATE TO '0.5'" to load this file. \quit

-- ---------------------------------------------------------------------
-- What an admin does to one device, and no stale devices (issue 22): a
-- device's own profile or hold, the log of device calls, why an
-- assignment was soft-deleted, ABM's migration deadline, the reconcile
-- (the functions that use them come further down)
-- ---------------------------------------------------------------------
ALTER TABLE host_dep_assignments
	ADD COLUMN deleted_reason text CHECK (deleted_reason IN ('deleted', 'reconciled', 'released', 'token removed',
														   'released from org', 'another server')),
	ADD COLUMN mdm_migration_deadline timestamptz,
	ADD COLUMN listed_at timestamptz;
CREATE INDEX host_dep_assignments_migration_idx ON host_dep_assignments (mdm_migration_deadline)
	WHERE mdm_migration_deadline IS NOT NULL AND deleted_at IS NULL;
ALTER TABLE abm_tokens
	ADD COLUMN reconcile_due boolean NOT NULL DEFAULT false,
	ADD COLUMN reconcile_asked_at timestamptz,
	ADD COLUMN reconcile_requested_at timestamptz,
	ADD COLUMN reconcile_cursor text,
	ADD COLUMN reconcile_started_at timestamptz,
	ADD COLUMN reconciled_at timestamptz;
ALTER TABLE ade_sync_runs ADD COLUMN reconciled int NOT NULL DEFAULT 0;
-- a token in sync mode has had its first full fetch: its reconciles count
-- from the update (the first one ade.reconcile_interval after it)
UPDATE abm_tokens SET reconciled_at = now() WHERE mode = 'sync';
-- the reasons that can be told: a token removed
UPDATE host_dep_assignments d SET deleted_reason = 'token removed'
  FROM ade_removed_tokens r
 WHERE d.abm_token_id = r.id AND d.deleted_at = r.removed_at;

-- A device's own profile or hold (devices.sql), by serial.
CREATE TABLE ade_device_pins (
	hardware_serial	text PRIMARY KEY,
	profile			jsonb,			-- null: held, no automatic assignment
	reason			text NOT NULL CHECK (reason IN ('pinned', 'held', 'profile removed')),
	since			timestamptz NOT NULL DEFAULT now(),
	set_by			text NOT NULL DEFAULT current_user,
	CHECK ((profile IS NULL) = (reason <> 'pinned'))
);
COMMENT ON TABLE ade_device_pins IS
	'a device''s own enrollment profile (wins over every scope) or a hold (no automatic assignment), by serial';

-- One row per serial per answer of ABM to a device call (and per serial
-- that got none: response_status null, error says why).  A release or an
-- activation lock escrow is a record an admin keeps; details are pruned
-- with the run history (ade.runs_retention).  No secret: the escrow key is
-- never stored.
CREATE TABLE ade_device_actions (
	id				bigserial PRIMARY KEY,
	call_id			bigint NOT NULL,	-- one call of a function, many batches
	hardware_serial	text NOT NULL,
	token_id		bigint,
	action			text NOT NULL CHECK (action IN ('details', 'remove_profile', 'release', 'activation_lock')),
	response_status	text,
	error			text,
	device			jsonb,				-- details: the record ABM answered
	asked_at		timestamptz NOT NULL DEFAULT now(),
	asked_by		text NOT NULL DEFAULT current_user
);
CREATE INDEX ade_device_actions_serial ON ade_device_actions (hardware_serial, asked_at);
CREATE INDEX ade_device_actions_call ON ade_device_actions (call_id);
-- the prune of details answers with the run history (src/sync.c)
CREATE INDEX ade_device_actions_details ON ade_device_actions (asked_at) WHERE action = 'details';
CREATE SEQUENCE ade_device_call_seq;
COMMENT ON TABLE ade_device_actions IS
	'every answer ABM gave to a device call (details, remove_profile, release, activation_lock), per serial';
SELECT pg_catalog.pg_extension_config_dump('ade_device_pins', '');
SELECT pg_catalog.pg_extension_config_dump('ade_device_actions', '');
SELECT pg_catalog.pg_extension_config_dump('ade_device_actions_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ade_device_call_seq', '');
REVOKE ALL ON ade_device_pins, ade_device_actions FROM PUBLIC;
REVOKE ALL ON SEQUENCE ade_device_call_seq FROM PUBLIC;
GRANT SELECT ON ade_device_actions TO ade_reader;

-- ---- the Business/School Manager API (api.sql) ----

-- An API account of Apple Business / School Manager (ABM/ASM > Preferences
-- > API): its client id, key id and EC P-256 private key, sealed like the
-- token secrets (src/vault.c, place abm_api_accounts.private_key:<id>), and
-- the access token the token endpoint gave for it (sealed too, shared by
-- every backend until it expires, as ade_token_secrets shares the ABM
-- session).  The inventory's progress: a pass (inventory_started_at) reads
-- the servers, the devices (inventory_cursor) and each server's device list
-- (inventory_server, inventory_cursor), over as many runs as it takes.
CREATE TABLE abm_api_accounts (
	id				bigserial PRIMARY KEY,
	client_id		text NOT NULL UNIQUE
		CHECK (client_id ~ '^(BUSINESSAPI|SCHOOLAPI)\.[A-Za-z0-9._-]{1,128}$'),
	key_id			text NOT NULL CHECK (key_id ~ '^[A-Za-z0-9._-]{1,128}$'),
	scope			text NOT NULL CHECK (scope IN ('business.api', 'school.api')),
	private_key		text NOT NULL,		-- sealed (ade2:...)
	access_token	text,				-- sealed
	access_token_expires_at timestamptz,
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now(),
	inventory_at	timestamptz,		-- the last complete inventory
	inventory_started_at timestamptz,	-- the pass under way
	inventory_phase	text CHECK (inventory_phase IN ('servers', 'devices', 'server_devices', 'finish')),
	inventory_cursor text,
	inventory_server text,
	not_before		timestamptz,		-- a 429/503 Retry-After: nothing sent before
	-- the last pass would have marked many devices released (more than a
	-- tenth): it did not (abm_org_devices.missing_since); the next pass
	-- releases those it does not list either
	release_check	boolean NOT NULL DEFAULT false,
	last_error		text,
	last_error_at	timestamptz
);
COMMENT ON TABLE abm_api_accounts IS 'Apple Business/School Manager API accounts; private_key and access_token sealed, readable by no ordinary role';

-- The organisation's MDM servers; token_id: the device-assignment token of
-- this database that is that server (matched by its server_uuid, or by name)
CREATE TABLE abm_mdm_servers (
	account_id		bigint NOT NULL REFERENCES abm_api_accounts (id) ON DELETE CASCADE,
	id				text NOT NULL,
	server_name		text,
	server_type		text,
	created_at_apple timestamptz,
	updated_at_apple timestamptz,
	attributes		jsonb,				-- every attribute as ABM sent it
	seen_at			timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (account_id, id)
);
COMMENT ON TABLE abm_mdm_servers IS 'the MDM servers of the organisation, from the Business/School Manager API';

-- Every device of the organisation (orgDevices), typed; attributes ABM
-- adds later are kept in extra.  released_at: no longer listed (or
-- releasedFromOrgDateTime); a row is never deleted but with its account.
CREATE TABLE abm_org_devices (
	account_id		bigint NOT NULL REFERENCES abm_api_accounts (id) ON DELETE CASCADE,
	serial			text NOT NULL,
	product_family	text,
	product_type	text,
	device_model	text,
	device_capacity	text,
	part_number		text,
	color			text,
	status			text,
	order_number	text,
	order_at		timestamptz,
	added_to_org_at	timestamptz,
	updated_at_apple timestamptz,
	purchase_source_id text,
	purchase_source_type text,
	imei			text[],
	meid			text[],
	eid				text,
	wifi_mac		text,
	bluetooth_mac	text,
	ethernet_mac	text[],
	mdm_migration_capable boolean,
	mdm_migration_status text,
	mdm_migration_deadline timestamptz,
	extra			jsonb,				-- attributes not in a column
	mdm_server_id	text,				-- the server that holds it (null: none)
	server_listed_at timestamptz,		-- when a server's list last named it
	released_at		timestamptz,
	seen_at			timestamptz NOT NULL DEFAULT now(),
	applecare_checked_at timestamptz,
	-- a pass that lost many devices did not list it: released only if the
	-- next pass does not list it either
	missing_since	timestamptz,
	PRIMARY KEY (account_id, serial)
);
CREATE INDEX abm_org_devices_serial ON abm_org_devices (serial);
CREATE INDEX abm_org_devices_applecare ON abm_org_devices (account_id, applecare_checked_at NULLS FIRST)
	WHERE released_at IS NULL;
COMMENT ON TABLE abm_org_devices IS 'every device of the organisation, from the Business/School Manager API';

-- AppleCare coverage items per device, as last fetched
CREATE TABLE abm_applecare (
	account_id		bigint NOT NULL,
	serial			text NOT NULL,
	item			int NOT NULL,
	status			text,
	payment_type	text,
	description		text,
	agreement_number text,
	start_at		timestamptz,
	end_at			timestamptz,
	cancel_at		timestamptz,
	is_renewable	boolean,
	is_canceled		boolean,
	fetched_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (account_id, serial, item),
	FOREIGN KEY (account_id, serial) REFERENCES abm_org_devices (account_id, serial) ON DELETE CASCADE
);
COMMENT ON TABLE abm_applecare IS 'AppleCare coverage of each device, from the Business/School Manager API';

-- Activities that move devices between MDM servers; the runs poll those
-- not finished.  status UNKNOWN: the POST got no clear answer (it may have
-- started one; it is never sent again: the next inventory shows the truth)
CREATE TABLE abm_device_activities (
	id				text PRIMARY KEY,
	account_id		bigint NOT NULL REFERENCES abm_api_accounts (id) ON DELETE CASCADE,
	activity_type	text NOT NULL CHECK (activity_type IN ('ASSIGN_DEVICES', 'UNASSIGN_DEVICES')),
	mdm_server_id	text NOT NULL,
	serials			text[] NOT NULL,
	status			text NOT NULL,
	sub_status		text,
	created_at		timestamptz NOT NULL DEFAULT now(),
	completed_at	timestamptz,
	polled_at		timestamptz,
	error			text,
	requested_by	name NOT NULL DEFAULT current_user
);
CREATE INDEX abm_device_activities_open ON abm_device_activities (account_id)
	WHERE status IN ('IN_PROGRESS');
COMMENT ON TABLE abm_device_activities IS 'activities that assign or unassign devices at ABM, and how they ended';
SELECT pg_catalog.pg_extension_config_dump('abm_api_accounts', '');
SELECT pg_catalog.pg_extension_config_dump('abm_api_accounts_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('abm_mdm_servers', '');
SELECT pg_catalog.pg_extension_config_dump('abm_org_devices', '');
SELECT pg_catalog.pg_extension_config_dump('abm_applecare', '');
SELECT pg_catalog.pg_extension_config_dump('abm_device_activities', '');
REVOKE ALL ON abm_api_accounts, abm_mdm_servers, abm_org_devices, abm_applecare, abm_device_activities FROM PUBLIC;
GRANT SELECT ON abm_mdm_servers, abm_org_devices, abm_applecare, abm_device_activities TO ade_reader;

-- ---------------------------------------------------------------------
-- A dump made under any earlier version restores into this one (issue 18)
-- ---------------------------------------------------------------------

ALTER TABLE ade_profile_applied ADD COLUMN platform text;
COMMENT ON COLUMN ade_profile_applied.platform IS 'internal: the scope as 0.1 to 0.3 named it; rows of theirs (a restored dump) are dropped';

CREATE FUNCTION ade_profile_applied_old_row() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN NULL;		-- a row of a 0.1 to 0.3 dump: worked out again by the next run
END
$$;
COMMENT ON FUNCTION ade_profile_applied_old_row() IS
	'trigger: drops the rows of ade_profile_applied that a dump of 0.1 to 0.3 restores';
CREATE TRIGGER ade_profile_applied_old_rows BEFORE INSERT ON ade_profile_applied
	FOR EACH ROW WHEN (NEW.scope IS NULL)
	EXECUTE FUNCTION ade_profile_applied_old_row();
REVOKE ALL ON FUNCTION ade_profile_applied_old_row() FROM PUBLIC;

-- host ids set by hand above 2^62 - 1 (issue 19)
-- A host id set by hand (inserted or updated) above 2^62 - 1 and past
-- hosts_id_seq is refused: the sequence follows every id set by hand
-- (ade_hosts_id_past()), and one near its end would leave the sync no id
-- for a new host, for good.  2^62 leaves as many again.  Ids the sequence
-- gave are taken, however large.  (A trigger with a WHEN: the sync's own
-- inserts pay nothing until the sequence is past 2^62.)
CREATE FUNCTION ade_hosts_id_refused() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NEW.id <= coalesce(pg_catalog.pg_sequence_last_value('@extschema@.hosts_id_seq'), 0) THEN
		RETURN NEW;
	END IF;
	RAISE EXCEPTION 'host id % is out of range', NEW.id
		USING ERRCODE = 'numeric_value_out_of_range',
			  DETAIL = 'ade refuses host ids set by hand above 4611686018427387903 (2^62 - 1): hosts_id_seq follows the ids set by hand, and one near its end would leave no id for the hosts of new devices.',
			  HINT = 'Take ids from hosts_id_seq: nextval(''hosts_id_seq'').';
END
$$;
COMMENT ON FUNCTION ade_hosts_id_refused() IS
	'trigger: refuses host ids set by hand above 2^62 - 1 and past the sequence, which would leave it no room for new hosts';
CREATE TRIGGER ade_hosts_id_in_range BEFORE INSERT OR UPDATE OF id ON hosts
	FOR EACH ROW WHEN (NEW.id OPERATOR(pg_catalog.>) 4611686018427387903)
	EXECUTE FUNCTION ade_hosts_id_refused();
REVOKE ALL ON FUNCTION ade_hosts_id_refused() FROM PUBLIC;

-- ---------------------------------------------------------------------
-- ade beside the application that owns hosts (issue 18): one lock rule
-- (src/coexist.c), delete triggers that read the assignments as they are
-- now, and a scheduled run that commits each page
-- ---------------------------------------------------------------------

CREATE FUNCTION ade_lock_hosts() RETURNS void
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ade_lock_hosts';
COMMENT ON FUNCTION ade_lock_hosts() IS
	'internal: takes hosts in EXCLUSIVE mode, queueing 50 ms at a time, within lock_timeout and the run''s time';

CREATE FUNCTION ade_live_hosts(p_ids bigint[],
	OUT host_id bigint, OUT hardware_serial text, OUT model text, OUT platform text, OUT token_id bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ade_live_hosts';
COMMENT ON FUNCTION ade_live_hosts(bigint[]) IS
	'internal: the hosts among p_ids whose ADE assignment is live as of the latest snapshot, with their last ABM record';

CREATE FUNCTION ade_run_latest(p_sql text, p_args jsonb) RETURNS bigint
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'ade_run_latest';
COMMENT ON FUNCTION ade_run_latest(text, jsonb) IS
	'internal: runs a statement of the host triggers on the assignments as of the latest snapshot (values in $1)';

CREATE OR REPLACE FUNCTION ade_restore_hosts(p_ids bigint[], p_models text[], p_platforms text[], p_teams bigint[])
RETURNS int
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n int;
	v_teams bigint[];
BEGIN
	-- their teams, locked as the team check will lock them (KEY SHARE) but
	-- never waited for: a team another session is deleting leaves the host
	-- with no team (as that delete will), where a wait would close a circle
	-- with that session, which waits for a host row this statement holds
	v_teams := ARRAY(SELECT t.id FROM @extschema@.teams t WHERE t.id = ANY (p_teams)
					  FOR KEY SHARE SKIP LOCKED);
	WITH restored AS (
		INSERT INTO @extschema@.hosts (id, hardware_serial, hardware_model, platform,
									   team_id, created_at, updated_at)
		SELECT o.id, d.hardware_serial,
			   coalesce(d.model, o.model),
			   coalesce(d.platform, o.platform, 'darwin'),
			   CASE WHEN o.team_id = ANY (v_teams) THEN o.team_id END, now(), now()
		  FROM unnest(p_ids, p_models, p_platforms, p_teams) AS o(id, model, platform, team_id)
		  -- live now, not as of the snapshot of a REPEATABLE READ
		  -- transaction (src/coexist.c)
		  JOIN @extschema@.ade_live_hosts(p_ids) d ON d.host_id = o.id
		 ORDER BY o.id
		RETURNING id, hardware_serial
	), told AS (
		SELECT @extschema@.ade_notify_hosts(array_agg('restored'::text), array_agg(r.id),
											array_agg(r.hardware_serial), array_agg(d.token_id))
		  FROM restored r JOIN @extschema@.ade_live_hosts(p_ids) d ON d.host_id = r.id
	)
	SELECT count(*) INTO n FROM restored r, told;
	IF n > 0 THEN
		PERFORM @extschema@.ade_hosts_id_past();
	END IF;
	RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION ade_hosts_after_delete() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- no row lock: no write of ade is half-way through while this statement
	-- holds hosts, and ade_restore_hosts() reads what is committed now
	-- (src/coexist.c)
	PERFORM @extschema@.ade_restore_hosts(array_agg(o.id), array_agg(o.hardware_model),
										  array_agg(o.platform), array_agg(o.team_id))
	   FROM ade_deleted_hosts o;
	RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION ade_hosts_reserialed() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- as of the latest snapshot (src/coexist.c): under REPEATABLE READ the
	-- application's may predate a page or a batch that changed the device
	PERFORM @extschema@.ade_run_latest($q$
		WITH freed AS (
			-- a soft-deleted device that pointed at this host gives the id
			-- up: the host is another device's now, and that device may
			-- come from ABM
			UPDATE @extschema@.host_dep_assignments d
			   SET host_id = pg_catalog.nextval('@extschema@.hosts_id_seq'), updated_at = pg_catalog.now()
			 WHERE d.hardware_serial = $1->>'serial' AND d.host_id = ($1->>'id')::bigint
			   AND d.deleted_at IS NOT NULL
			RETURNING 1
		), tm AS (
			-- its team, not waited for (as in ade_restore_hosts())
			SELECT t.id FROM @extschema@.teams t WHERE t.id = ($1->>'team_id')::bigint
			   FOR KEY SHARE SKIP LOCKED
		), made AS (
			-- the live device gets a host of its own again
			INSERT INTO @extschema@.hosts (hardware_serial, hardware_model, platform, team_id)
			SELECT d.hardware_serial, coalesce(d.device->>'model', $1->>'model'),
				   coalesce(@extschema@.ade_platform(d.device->>'device_family'), $1->>'platform'),
				   (SELECT tm.id FROM tm)
			  FROM @extschema@.host_dep_assignments d
			 WHERE d.hardware_serial = $1->>'serial' AND d.host_id = ($1->>'id')::bigint
			   AND d.deleted_at IS NULL
			RETURNING id, hardware_serial
		), moved AS (
			UPDATE @extschema@.host_dep_assignments d
			   SET host_id = m.id, updated_at = pg_catalog.now()
			  FROM made m
			 WHERE d.hardware_serial = m.hardware_serial
			RETURNING m.id, m.hardware_serial, d.abm_token_id
		)
		SELECT @extschema@.ade_notify_hosts(pg_catalog.array_agg('restored'::text), pg_catalog.array_agg(m.id),
											pg_catalog.array_agg(m.hardware_serial), pg_catalog.array_agg(m.abm_token_id))
		  FROM moved m, (SELECT pg_catalog.count(*) FROM freed) f
		$q$::text, pg_catalog.jsonb_build_object('serial', OLD.hardware_serial, 'id', OLD.id,
										   'model', OLD.hardware_model, 'platform', OLD.platform,
										   'team_id', OLD.team_id));
	RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION ade_hosts_renumbered() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- as of the latest snapshot (src/coexist.c), in this order (host_id is
	-- the assignments' key): a soft-deleted device that pointed at the new
	-- id gives it up, then the device follows its host
	PERFORM @extschema@.ade_run_latest($q$
		UPDATE @extschema@.host_dep_assignments d
		   SET host_id = pg_catalog.nextval('@extschema@.hosts_id_seq'), updated_at = pg_catalog.now()
		 WHERE d.host_id = ($1->>'new_id')::bigint AND d.hardware_serial <> $1->>'serial'
		   AND d.deleted_at IS NOT NULL
		$q$::text, pg_catalog.jsonb_build_object('new_id', NEW.id, 'serial', NEW.hardware_serial));
	PERFORM @extschema@.ade_run_latest($q$
		UPDATE @extschema@.host_dep_assignments d
		   SET host_id = ($1->>'new_id')::bigint, updated_at = pg_catalog.now()
		 WHERE d.host_id = ($1->>'old_id')::bigint AND d.hardware_serial = $1->>'serial'
		$q$::text, pg_catalog.jsonb_build_object('new_id', NEW.id, 'old_id', OLD.id, 'serial', NEW.hardware_serial));
	PERFORM @extschema@.ade_hosts_id_past();
	RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION ade_hosts_team_moved() RETURNS trigger
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

-- the default teams of abm_tokens: no foreign key (the application's delete
-- of a team under REPEATABLE READ failed on a token row a page wrote since
-- its snapshot); the delete trigger sets them to null as of now, a team's
-- new id is followed, ade_set_default_teams() checks the teams exist
ALTER TABLE abm_tokens DROP CONSTRAINT abm_tokens_macos_team_id_fkey,
	DROP CONSTRAINT abm_tokens_ios_team_id_fkey,
	DROP CONSTRAINT abm_tokens_ipados_team_id_fkey;
CREATE OR REPLACE FUNCTION ade_teams_after_delete() RETURNS trigger
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

CREATE OR REPLACE FUNCTION ade_set_default_teams(token_id bigint, macos bigint, ios bigint, ipados bigint)
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

-- statements on teams take hosts first, as a sync does (src/coexist.c)
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

CREATE OR REPLACE FUNCTION ade_retry_rejected(p_token bigint, p_deadline timestamptz) RETURNS int
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

CREATE OR REPLACE FUNCTION ade_assign_candidates(p_token bigint)
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

CREATE OR REPLACE FUNCTION ade_store_answers(p_token bigint, p_uuid text, p_serials text[],
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

CREATE OR REPLACE FUNCTION ade_batch_unanswered(p_token bigint, p_serials text[], p_retry_after int)
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

CREATE OR REPLACE FUNCTION ade_token_row(p_consumer_key text, p_renew_at timestamptz) RETURNS bigint
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
	-- a restore makes devices live again: the one lock rule with the
	-- application (src/coexist.c)
	PERFORM @extschema@.ade_lock_hosts();
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
		   SET deleted_at = NULL, deleted_reason = NULL
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
	-- the one lock rule with the application (src/coexist.c): hosts first,
	-- then the token
	PERFORM @extschema@.ade_lock_hosts();
	SELECT * INTO t FROM @extschema@.abm_tokens x WHERE x.id = ade_remove_token.token_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'abm token % does not exist', ade_remove_token.token_id
			USING ERRCODE = 'no_data_found',
				  HINT = 'SELECT id, org_name FROM abm_tokens lists the tokens.';
	END IF;
	WITH gone AS (
		UPDATE @extschema@.host_dep_assignments d
		   SET deleted_at = v_at, deleted_reason = 'token removed', needs_assign = false, updated_at = now()
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

CREATE OR REPLACE FUNCTION ade_schedule(schedule text DEFAULT '* * * * *') RETURNS bigint
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
	IF schedule IS NULL OR btrim(schedule) = '' THEN
		RAISE EXCEPTION 'schedule is %', CASE WHEN schedule IS NULL THEN 'null' ELSE 'empty' END
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Omit it for every minute, or pass a cron expression such as ''*/5 * * * *''.';
	END IF;
	BEGIN
		EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO jid
			USING 'ade_sync', schedule, @extschema@.ade_job_command();
	EXCEPTION WHEN others THEN
		-- only pg_cron's refusal of the expression is reworded (OTHERS
		-- never catches a cancel or a timeout)
		IF SQLERRM NOT LIKE 'invalid schedule%' THEN
			RAISE;
		END IF;
		RAISE EXCEPTION 'invalid schedule "%"', schedule
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'pg_cron takes five fields: minute, hour, day of the month, month, day of the week.',
				  HINT = 'For example ''* * * * *'' (every minute, the default), ''*/5 * * * *'' (every five minutes), ''0 * * * *'' (hourly).';
	END;
	PERFORM @extschema@.ade_drop_cron_cleanup();
	RETURN jid;
END
$$;
COMMENT ON FUNCTION ade_schedule(text) IS
	'registers the pg_cron job ade_sync (CALL ade_sync_job(), every minute by default); idempotent';

CREATE PROCEDURE ade_sync_job()
	AS 'MODULE_PATHNAME', 'ade_sync_job' LANGUAGE C;
COMMENT ON PROCEDURE ade_sync_job() IS
	'syncs every ABM token, committing each page: what pg_cron runs';
CREATE PROCEDURE ade_sync_job(token_id bigint)
	AS 'MODULE_PATHNAME', 'ade_sync_job' LANGUAGE C;
COMMENT ON PROCEDURE ade_sync_job(bigint) IS
	'syncs one ABM token, committing each page';

REVOKE ALL ON FUNCTION ade_lock_hosts(), ade_live_hosts(bigint[]), ade_run_latest(text, jsonb),
	ade_teams_lock_hosts(), ade_teams_renumbered(), ade_teams_after_truncate() FROM PUBLIC;
REVOKE ALL ON PROCEDURE ade_sync_job(), ade_sync_job(bigint) FROM PUBLIC;

-- the schema by its name (@extschema@ is quoted already)
CREATE OR REPLACE FUNCTION ade_unschedule() RETURNS boolean
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
	PERFORM @extschema@.ade_drop_cron_cleanup();
	RETURN found_job;
END
$$;

-- What is wrong with the pg_cron job, in words, or NULL: its last run
-- failed (a setting of the database that breaks it, a role it runs as
-- that may not use ade, a timeout), so no run leaves a history row and
-- only cron.job_run_details says why (the job ade_schedule() made: its
-- command, not only its name).  For ade_status.attention, which
-- ade_reader reads: SECURITY DEFINER (pg_cron shows a role only its own
-- jobs' runs).
CREATE FUNCTION ade_job_problem() RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_status text;
	v_message text;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron')
	   OR to_regclass('cron.job_run_details') IS NULL THEN
		RETURN NULL;
	END IF;
	EXECUTE 'SELECT d.status, d.return_message FROM cron.job j JOIN cron.job_run_details d ON d.jobid = j.jobid
			  WHERE j.jobname = $1 AND j.database = current_database() AND d.status IN ($2, $3)
				AND j.command = $4 AND d.command = $4
			  ORDER BY d.start_time DESC NULLS LAST LIMIT 1'
		INTO v_status, v_message USING 'ade_sync', 'succeeded', 'failed', @extschema@.ade_job_command();
	IF v_status = 'failed' THEN
		RETURN format('the pg_cron job ade_sync fails: %s (cron.job_run_details)',
					  left(coalesce(v_message, 'no message'), 300));
	END IF;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_job_problem() IS
	'internal: why the last run of the pg_cron job ade_sync failed, or null';

REVOKE ALL ON FUNCTION ade_job_problem() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ade_job_problem() TO ade_reader;

-- Whether this server preloaded ade: only then is its WAL resource manager
-- registered (src/kekwal.c), whatever shared_preload_libraries spells.
CREATE FUNCTION ade_preloaded() RETURNS boolean
	AS 'MODULE_PATHNAME', 'ade_preloaded' LANGUAGE C STABLE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_preloaded() IS
	'internal: whether this server preloaded the ade library (shared_preload_libraries)';
REVOKE ALL ON FUNCTION ade_preloaded() FROM PUBLIC;

-- What this server lacks to run the sync, now or after a failover to it,
-- in words, or NULL: each node of a formation has its own settings (they
-- do not replicate), so each says so itself, a standby too, before a
-- failover needs it.  ade preloaded (the README's setting: a standby
-- replays ade's WAL records only with it); where pg_cron is installed in
-- this database, pg_cron preloaded and cron.database_name this database
-- (else the ade_sync job never runs here).  SECURITY DEFINER: both
-- settings are superuser-only, and ade_reader reads ade_status.  The
-- arguments are for testing other values; NULL is this server's (for ade,
-- whether the library registered its resource manager).
CREATE FUNCTION ade_node_problem(preload text DEFAULT NULL, cron_database text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_libs text[];
	v_ade boolean;
	v_cron_db text;
BEGIN
	-- the libraries as the server loads them: separated by commas, any
	-- white space and quotes aside, a directory and .so aside
	SELECT coalesce(array_agg(regexp_replace(regexp_replace(
				btrim(btrim(x, E' \t\n\r\f\v'), '"'), '^.*/', ''), '\.so$', '')), '{}')
	  INTO v_libs
	  FROM regexp_split_to_table(coalesce(preload, current_setting('shared_preload_libraries')), ',') x
	 WHERE btrim(x, E' \t\n\r\f\v') <> '';
	-- this server's: whether the library registered its resource manager
	v_ade := CASE WHEN preload IS NULL THEN @extschema@.ade_preloaded() ELSE 'ade' = ANY (v_libs) END;
	IF NOT v_ade THEN
		RETURN 'ade is not in shared_preload_libraries on this server: add it (beside pg_cron) and restart; '
			   'a standby replays ade''s WAL records only with it (README, Running it in production)';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
		RETURN NULL;
	END IF;
	IF NOT 'pg_cron' = ANY (v_libs) THEN
		RETURN 'pg_cron is not in shared_preload_libraries on this server: the ade_sync job does not run here '
			   '(nor after a failover to it); add it and restart';
	END IF;
	v_cron_db := coalesce(cron_database, current_setting('cron.database_name', true), 'postgres');
	IF v_cron_db <> current_database() THEN
		RETURN format('cron.database_name is %s on this server, not this database (%s): pg_cron runs the '
					  'ade_sync job only from its own database (nor after a failover to it); set it and restart',
					  quote_literal(v_cron_db), quote_literal(current_database()));
	END IF;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_node_problem(text, text) IS
	'what this server lacks to run the sync (ade or pg_cron not preloaded, cron.database_name), or null; arguments for testing, null = this server''s';
REVOKE ALL ON FUNCTION ade_node_problem(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ade_node_problem(text, text) TO ade_reader;

-- 0.5: ABM's pauses (Retry-After) kept across runs (issue 21)
-- The pauses ABM asked for: an answer 429 or 503 with a Retry-After that a
-- run did not wait out stops that token's requests of that kind (request:
-- session, account, fetch, sync, define, assign, ...; abm.c names them)
-- until paused_until, in every run and backend; its other requests and the
-- other tokens go on.  A Retry-After over a day is bounded to a day.  No
-- foreign key: a run stores a pause while another session may hold the
-- token's row (a renewal), and a foreign key check would wait for it.
CREATE TABLE ade_rate_limits (
	token_id		bigint NOT NULL,
	request			text NOT NULL,
	paused_until	timestamptz NOT NULL,
	status			int NOT NULL,		-- 429 or 503
	retry_after		int NOT NULL,		-- seconds ABM asked for (bounded)
	asked_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (token_id, request)
);
COMMENT ON TABLE ade_rate_limits IS 'pauses ABM asked for with Retry-After, per token and kind of request; no request of that kind is sent before paused_until';
SELECT pg_catalog.pg_extension_config_dump('ade_rate_limits', '');
REVOKE ALL ON ade_rate_limits FROM PUBLIC;
GRANT SELECT ON ade_rate_limits TO ade_reader;

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
REVOKE ALL ON FUNCTION ade_pause(bigint, text, timestamptz, int, int) FROM PUBLIC;

-- attention says why the pg_cron job fails
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
		 WHEN pz.paused IS NOT NULL
		   THEN 'ABM asked to wait (429/503 Retry-After), nothing of these kinds is sent until then: '
				OPERATOR(pg_catalog.||) pz.said
		 WHEN k.node IS NOT NULL THEN k.node
		 WHEN t.last_error IS NOT NULL THEN 'the last sync failed: ' OPERATOR(pg_catalog.||) t.last_error
		 WHEN @extschema@.ade_job_problem() IS NOT NULL THEN @extschema@.ade_job_problem()
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
	   r.rejected,
	   pz.paused,
	   coalesce(a.migration_due_7_days, 0) AS migration_due_7_days,
	   coalesce(a.held, 0) AS held,
	   coalesce(a.reconciled, 0) AS devices_reconciled,
	   t.reconciled_at,
	   CASE WHEN t.reconcile_started_at IS NOT NULL THEN 'under way since ' OPERATOR(pg_catalog.||) t.reconcile_started_at::text
			WHEN t.reconcile_due THEN 'asked for: the next run starts it'
	   END AS reconcile,
	   NULL::bigint AS api_account_id,
	   NULL::timestamptz AS inventory_at,
	   NULL::bigint AS org_devices,
	   NULL::bigint AS org_devices_unassigned
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
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL AND d.assign_profile_response OPERATOR(pg_catalog.=) 'NOT_ACCESSIBLE') AS not_accessible,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL
				AND d.mdm_migration_deadline OPERATOR(pg_catalog.>=) pg_catalog.now()
				AND d.mdm_migration_deadline OPERATOR(pg_catalog.<=) (pg_catalog.now() OPERATOR(pg_catalog.+) interval '7 days')) AS migration_due_7_days,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_at IS NULL AND EXISTS (
				SELECT 1 FROM @extschema@.ade_device_pins y
				 WHERE y.hardware_serial OPERATOR(pg_catalog.=) d.hardware_serial AND y.profile IS NULL)) AS held,
		   pg_catalog.count(*) FILTER (WHERE d.deleted_reason OPERATOR(pg_catalog.=) 'reconciled') AS reconciled
	  FROM @extschema@.host_dep_assignments d
	  LEFT JOIN @extschema@.hosts h ON h.id OPERATOR(pg_catalog.=) d.host_id
	 WHERE d.abm_token_id OPERATOR(pg_catalog.=) t.id
  ) a ON true
  CROSS JOIN LATERAL (
	SELECT pg_catalog.count(*) AS rejected
	  FROM @extschema@.ade_rejected_records x
	 WHERE x.token_id OPERATOR(pg_catalog.=) t.id
  ) r
  CROSS JOIN (SELECT @extschema@.ade_secret_status() AS problem, @extschema@.ade_node_problem() AS node) k
  LEFT JOIN LATERAL (
	SELECT pg_catalog.jsonb_object_agg(z.request, z.paused_until ORDER BY z.request) AS paused,
		   pg_catalog.string_agg(z.request OPERATOR(pg_catalog.||) ' until ' OPERATOR(pg_catalog.||) z.paused_until::text,
								 ', ' ORDER BY z.request) AS said
	  FROM @extschema@.ade_rate_limits z
	 WHERE z.token_id OPERATOR(pg_catalog.=) t.id AND z.paused_until OPERATOR(pg_catalog.>) pg_catalog.now()
  ) pz ON true
UNION ALL
-- a line per Business/School Manager API account (api.sql): its inventory
SELECT NULL::bigint, NULL::text, NULL::text, NULL::text, 'api'::text,
	   a.inventory_at, pg_catalog.now() OPERATOR(pg_catalog.-) a.inventory_at,
	   a.last_error, NULL::boolean, NULL::boolean, NULL::timestamptz, NULL::boolean, NULL::int, NULL::boolean,
	   NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint,
	   NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::boolean,
	   CASE
		 WHEN k2.problem IS NOT NULL THEN k2.problem
		 WHEN a.not_before OPERATOR(pg_catalog.>) pg_catalog.now()
		   THEN 'ABM asked to wait (429/503 Retry-After): nothing is sent to this API account before ' OPERATOR(pg_catalog.||) a.not_before::text
		 WHEN a.last_error IS NOT NULL THEN 'the last inventory failed: ' OPERATOR(pg_catalog.||) a.last_error
		 WHEN a.inventory_at IS NULL AND a.inventory_started_at IS NOT NULL
		   THEN 'the first inventory is under way (since ' OPERATOR(pg_catalog.||) a.inventory_started_at::text OPERATOR(pg_catalog.||) ')'
		 WHEN a.inventory_at IS NULL
		   THEN 'no inventory yet: SELECT * FROM ade_inventory_sync(), or the next ade_sync() (ade.inventory_interval)'
		 WHEN c.unassigned OPERATOR(pg_catalog.>) 0
		   THEN pg_catalog.format('%s devices of the organisation are on no MDM server: SELECT * FROM ade_devices WHERE mdm_server_id IS NULL AND released_at IS NULL', c.unassigned)
		 ELSE 'ok'
	   END,
	   NULL::jsonb, NULL::bigint,
	   CASE WHEN a.not_before OPERATOR(pg_catalog.>) pg_catalog.now() THEN pg_catalog.jsonb_build_object('api', a.not_before) END,
	   NULL::bigint, NULL::bigint, NULL::bigint, NULL::timestamptz,
	   CASE WHEN a.inventory_started_at IS NOT NULL THEN 'inventory under way since ' OPERATOR(pg_catalog.||) a.inventory_started_at::text END,
	   a.id, a.inventory_at, c.devices, c.unassigned
  FROM @extschema@.abm_api_accounts a
  CROSS JOIN (SELECT @extschema@.ade_secret_status() AS problem) k2
  CROSS JOIN LATERAL (
	SELECT pg_catalog.count(*) FILTER (WHERE o.released_at IS NULL) AS devices,
		   pg_catalog.count(*) FILTER (WHERE o.released_at IS NULL AND o.mdm_server_id IS NULL) AS unassigned
	  FROM @extschema@.abm_org_devices o
	 WHERE o.account_id OPERATOR(pg_catalog.=) a.id
  ) c;
COMMENT ON VIEW ade_status IS 'one row per ABM token: its state and device counts, and one per Business/School Manager API account (mode api); no secret';

-- The job's command.  It names ade's schema (quoted), and calls
-- ade_sync_job() there only while ade is installed in that very schema (its
-- oid, and its name still naming it): a role that owns the schema (the
-- database owner owns public) and drops it, ade with it, then makes a
-- schema and a procedure of those names, gets nothing run by the job's
-- superuser.  (Renaming ade's schema is refused: ade_schema_guard.)
CREATE FUNCTION ade_job_command() RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
	SELECT format('DO $ade$ BEGIN IF EXISTS (SELECT FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace WHERE e.extname OPERATOR(pg_catalog.=) ''ade'' AND n.oid OPERATOR(pg_catalog.=) %s AND n.nspname OPERATOR(pg_catalog.=) %L) THEN CALL %I.ade_sync_job(); END IF; END $ade$',
				  n.oid::bigint, n.nspname, n.nspname)
	  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
	 WHERE e.extname = 'ade'
$fn$;
COMMENT ON FUNCTION ade_job_command() IS
	'internal: the pg_cron job''s command: CALL ade_sync_job() in ade''s schema, only while ade is installed there';

-- The schema keeps its name: every function body, trigger and the job name
-- it (what the install wrote for @extschema@).  Renamed, a role that can
-- create a schema of the old name (the database owner, who owns public)
-- would have ade's triggers and the job's superuser run its functions: a
-- statement that renames ade's schema is refused, whoever runs it.
CREATE FUNCTION ade_schema_guard() RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
					WHERE e.extname = 'ade' AND quote_ident(n.nspname) = $q$@extschema@$q$) THEN
		RAISE EXCEPTION 'the schema of extension ade cannot be renamed'
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'ade''s functions, triggers and pg_cron job name their schema.',
				  HINT = 'To move ade to another schema: pg_dump the database, DROP EXTENSION ade, CREATE EXTENSION ade SCHEMA <new>, and restore the data.';
	END IF;
END
$$;
COMMENT ON FUNCTION ade_schema_guard() IS 'event trigger: refuses to rename the schema ade is installed in';
CREATE EVENT TRIGGER ade_schema_guard ON ddl_command_end WHEN TAG IN ('ALTER SCHEMA')
	EXECUTE FUNCTION ade_schema_guard();
REVOKE ALL ON FUNCTION ade_job_command(), ade_schema_guard() FROM PUBLIC;

-- A job ade_schedule() made runs ade_sync_job() from now on, through
-- ade_job_command() (its schedule and owner kept).
-- (every name qualified: the script runs with the extension's schema first
-- in search_path, where look-alikes may wait; the schema by its name, not
-- @extschema@, which is quoted already)
DO $$
DECLARE
	v_schema name := (SELECT n.nspname FROM pg_catalog.pg_extension e
						JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
					   WHERE e.extname OPERATOR(pg_catalog.=) 'ade');
BEGIN
	IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'pg_cron') THEN
		EXECUTE 'UPDATE cron.job SET command = $1 WHERE jobname OPERATOR(pg_catalog.=) $2 AND command OPERATOR(pg_catalog.=) ANY ($3)'
			USING @extschema@.ade_job_command(), 'ade_sync',
				  ARRAY[pg_catalog.format('SELECT %I.ade_sync()', v_schema),
						pg_catalog.format('CALL %I.ade_sync_job()', v_schema),
						pg_catalog.format('SELECT %I.ade_sync()', '@extschema@')];
	END IF;
END
$$;

-- 0.5, issue 20: a NULL profile is an error, clearing is ade_clear_profile();
-- macos is darwin in a scope
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

CREATE OR REPLACE FUNCTION ade_set_profile(profile jsonb, token_id bigint DEFAULT 0,
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
REVOKE ALL ON FUNCTION ade_profile_scope(bigint, text, bigint), ade_clear_profile(bigint, text, bigint) FROM PUBLIC;

-- the backups to take before uninstalling
CREATE FUNCTION ade_export_key() RETURNS bytea
	AS 'MODULE_PATHNAME', 'ade_export_key' LANGUAGE C STRICT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_export_key() IS
	'the MDM server key pair as one PEM file (private key, then certificate), for a backup that ade_import_key() takes back';

CREATE FUNCTION ade_export_tokens(OUT token_id bigint, OUT org_name text, OUT consumer_key text,
	OUT renew_at timestamptz, OUT token bytea) RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'ade_export_tokens' LANGUAGE C STRICT VOLATILE ROWS 10
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_export_tokens() IS
	'each stored ABM token as the .p7m ABM would hand out for this server''s key pair, which ade_add_token() takes back';
REVOKE ALL ON FUNCTION ade_export_key(), ade_export_tokens() FROM PUBLIC;

-- DROP EXTENSION ade: the guard, which also unschedules the job; 0.4's
-- cleanup trigger and function, made outside the extension, go
CREATE FUNCTION ade_drop_cron_cleanup() RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_fn regprocedure := to_regprocedure(format('%I.ade_cron_cleanup()',
		(SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
		  WHERE e.extname = 'ade')));
BEGIN
	IF EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'ade_cron_cleanup' AND evtfoid = v_fn) THEN
		EXECUTE 'DROP EVENT TRIGGER ade_cron_cleanup';
	END IF;
	IF v_fn IS NOT NULL AND EXISTS (
		SELECT 1 FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
		 WHERE p.oid = v_fn
		   AND (r.rolsuper OR p.proowner = (SELECT e.extowner FROM pg_extension e WHERE e.extname = 'ade')))
	   AND NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtfoid = v_fn) THEN
		EXECUTE format('DROP FUNCTION %s', v_fn);
	END IF;
END
$$;
COMMENT ON FUNCTION ade_drop_cron_cleanup() IS
	'internal: removes the event trigger ade_cron_cleanup and its function that 0.4''s ade_schedule() made';
REVOKE ALL ON FUNCTION ade_drop_cron_cleanup() FROM PUBLIC;
SELECT @extschema@.ade_drop_cron_cleanup();
CREATE FUNCTION ade_drop_guard() RETURNS event_trigger
	AS 'MODULE_PATHNAME', 'ade_drop_guard' LANGUAGE C
	SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_drop_guard() IS
	'event trigger: refuses a drop that would lose ade''s tokens, key pair or hosts unless ade.allow_drop is on; unschedules the job';
REVOKE ALL ON FUNCTION ade_drop_guard() FROM PUBLIC;
CREATE EVENT TRIGGER ade_drop_guard ON ddl_command_start
	WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED')
	EXECUTE FUNCTION ade_drop_guard();

-- alerting: one row per problem
-- One row per problem, for alerting (README, Monitoring): what
-- ade_status.attention says first, and everything else that is wrong at the
-- same time, each with a stable code.  A pg_cron run that "succeeded" only
-- says the job's command ran to its end: a token whose requests to ABM
-- failed is a row here (last_run_failed) and in ade_sync_runs.  No row: all
-- is well.  ade_reader may call it: SECURITY DEFINER, as it asks which
-- waiting devices no profile scope covers (ade_unassignable(), which
-- reads the profiles); it returns counts and words, never a secret.
CREATE FUNCTION ade_problems(stale_after interval DEFAULT '10 minutes',
	OUT token_id bigint, OUT org_name text, OUT problem text, OUT since timestamptz, OUT detail text)
RETURNS SETOF record
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	WITH s AS (
		SELECT x.*, ok.last_ok, f.failing_since
		  FROM @extschema@.ade_status x
		  LEFT JOIN LATERAL (
			SELECT max(u.started_at) AS last_ok FROM @extschema@.ade_sync_runs u
			 WHERE u.token_id = x.token_id AND u.error IS NULL) ok ON true
		  LEFT JOIN LATERAL (
			SELECT min(u.started_at) AS failing_since FROM @extschema@.ade_sync_runs u
			 WHERE u.token_id = x.token_id AND u.error IS NOT NULL AND u.error <> 'busy'
			   AND u.started_at > coalesce(ok.last_ok, '-infinity')) f ON true
		 WHERE x.token_id IS NOT NULL
	)
	SELECT NULL::bigint, NULL::text, 'key_file', NULL::timestamptz, k.problem
	  FROM (SELECT @extschema@.ade_secret_status() AS problem) k WHERE k.problem IS NOT NULL
	UNION ALL
	SELECT NULL, NULL, 'node_setup', NULL, n.problem
	  FROM (SELECT @extschema@.ade_node_problem() AS problem) n WHERE n.problem IS NOT NULL
	UNION ALL
	SELECT NULL, NULL, 'job_failing', NULL, j.problem
	  FROM (SELECT @extschema@.ade_job_problem() AS problem) j WHERE j.problem IS NOT NULL
	UNION ALL
	SELECT s.token_id, s.org_name, 'token_invalid', NULL,
		   'Apple rejects the token: download a new one from ABM and call ade_add_token()'
	  FROM s WHERE s.token_invalid
	UNION ALL
	SELECT s.token_id, s.org_name, 'terms_not_accepted', NULL,
		   'terms not accepted: an ABM administrator must sign in and accept them'
	  FROM s WHERE s.terms_expired
	UNION ALL
	SELECT s.token_id, s.org_name, 'token_expired', s.renew_at,
		   'the token has expired: renew it in ABM and call ade_add_token()'
	  FROM s WHERE s.token_expired
	UNION ALL
	SELECT s.token_id, s.org_name, 'token_expiring', s.renew_at - interval '30 days',
		   format('the token expires on %s: renew it in ABM and call ade_add_token()', s.renew_at::date)
	  FROM s WHERE s.expires_within_30_days AND NOT s.token_expired
	UNION ALL
	SELECT s.token_id, s.org_name, 'last_run_failed', s.failing_since, s.last_error
	  FROM s WHERE s.last_error IS NOT NULL
	UNION ALL
	SELECT s.token_id, s.org_name, 'rate_limited', z.asked_at,
		   format('ABM answered a %s request with HTTP %s and Retry-After %s s: none is sent until %s',
				  z.request, z.status, z.retry_after, z.paused_until)
	  FROM s JOIN @extschema@.ade_rate_limits z ON z.token_id = s.token_id
	 WHERE z.paused_until > now()
	UNION ALL
	SELECT s.token_id, s.org_name, 'never_synced', NULL,
		   'never synced: run SELECT * FROM ade_sync() or ade_schedule()'
	  FROM s WHERE s.last_sync_at IS NULL
	UNION ALL
	SELECT s.token_id, s.org_name, 'no_successful_run', s.last_ok,
		   CASE WHEN s.last_ok IS NULL THEN format('no run has succeeded (none in ade_sync_runs for %s)', stale_after)
				ELSE format('no run has succeeded for %s (the last one at %s)', stale_after, s.last_ok) END
	  FROM s
	 WHERE s.last_sync_at IS NOT NULL
	   AND coalesce(s.last_ok, '-infinity') < now() - stale_after
	UNION ALL
	SELECT s.token_id, s.org_name, 'profile_refused', NULL, p.problem
	  FROM s CROSS JOIN LATERAL (SELECT @extschema@.ade_profile_problem(s.token_id) AS problem) p
	 WHERE p.problem IS NOT NULL
	UNION ALL
	SELECT s.token_id, s.org_name, 'records_rejected', NULL,
		   format('%s device records from ABM could not be applied: see ade_rejected_records (reason)', s.rejected)
	  FROM s WHERE s.rejected > 0
	UNION ALL
	SELECT s.token_id, s.org_name, 'no_profile', NULL,
		   format('%s devices wait for a profile none of the scopes gives them: set ade.enroll_url or call ade_set_profile()',
				  CASE WHEN u.n < 0 THEN s.pending ELSE u.n END)
	  FROM s CROSS JOIN LATERAL (SELECT @extschema@.ade_unassignable(s.token_id) AS n) u
	 WHERE s.pending > 0 AND s.assign_profiles AND u.n <> 0
	UNION ALL
	-- the API accounts (token_id null; org_name: the client id)
	SELECT NULL, a.client_id, 'api_inventory_failed', a.last_error_at, a.last_error
	  FROM @extschema@.abm_api_accounts a
	 WHERE a.last_error IS NOT NULL AND coalesce(a.not_before <= now(), true)
	UNION ALL
	SELECT NULL, a.client_id, 'api_rate_limited', a.last_error_at,
		   format('ABM asked to wait: nothing is sent to this API account before %s', a.not_before)
	  FROM @extschema@.abm_api_accounts a WHERE a.not_before > now()
	UNION ALL
	SELECT NULL, x.client_id, 'devices_on_no_server', x.inventory_at,
		   format('%s devices of the organisation are on no MDM server (ade_devices)', x.org_devices_unassigned)
	  FROM (SELECT st.org_devices_unassigned, st.inventory_at, a.client_id
			  FROM @extschema@.ade_status st JOIN @extschema@.abm_api_accounts a ON a.id = st.api_account_id) x
	 WHERE x.org_devices_unassigned > 0
$$;
COMMENT ON FUNCTION ade_problems(interval) IS
	'one row per problem (a stable code, the token, since when, in words), for alerting; none when all is well';
REVOKE ALL ON FUNCTION ade_problems(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ade_problems(interval) TO ade_reader;

-- Turns a token's profile assignment off (its devices are stored, none is
-- assigned: an organisation moving from another MDM) or on again (the
-- waiting devices are assigned on the next sync).  UPDATE abm_tokens SET
-- assign_profiles does the same, but says UPDATE 0 for a name that matched
-- nothing; this says which token it could not find.
CREATE FUNCTION ade_set_assign_profiles(token_id bigint, assign_profiles boolean) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF token_id IS NULL OR assign_profiles IS NULL THEN
		RAISE EXCEPTION '% is null', CASE WHEN token_id IS NULL THEN 'token_id' ELSE 'assign_profiles' END
			USING ERRCODE = 'null_value_not_allowed',
				  DETAIL = 'A NULL token_id usually comes from a lookup that found nothing (a misspelt org_name, say).',
				  HINT = 'SELECT id, org_name FROM abm_tokens lists the tokens.';
	END IF;
	UPDATE @extschema@.abm_tokens t
	   SET assign_profiles = ade_set_assign_profiles.assign_profiles, updated_at = now()
	 WHERE t.id = ade_set_assign_profiles.token_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'abm token % does not exist', token_id USING ERRCODE = 'no_data_found',
			HINT = 'SELECT id, org_name FROM abm_tokens lists the tokens.';
	END IF;
END
$$;
COMMENT ON FUNCTION ade_set_assign_profiles(bigint, boolean) IS
	'turns a token''s profile assignment off (devices stored, none assigned) or on; an unknown or NULL token is an error';
REVOKE ALL ON FUNCTION ade_set_assign_profiles(bigint, boolean) FROM PUBLIC;

-- ---------------------------------------------------------------------
-- Device calls, pins and holds, the reconcile (issue 22)
-- ---------------------------------------------------------------------
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
CREATE OR REPLACE FUNCTION ade_apply_records(p_token bigint, p_devices jsonb, p_fetch boolean,
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

-- Live devices of a token that wait for a profile and have none to get.
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
	   AND m.profile IS NULL
	   AND NOT EXISTS (SELECT 1 FROM @extschema@.ade_device_pins y
						WHERE y.hardware_serial = d.hardware_serial);
	RETURN n;
END
$$;
COMMENT ON FUNCTION ade_unassignable(bigint) IS
	'internal: how many live devices of a token wait for a profile that no scope defines (-1: no scope defines any)';

-- the end of a run counts what a reconcile soft-deleted
DROP FUNCTION ade_finish_run(bigint, text, int, int, int, int, int, int, int, int, timestamptz, text, text, boolean, text);
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
-- with it.  After the last page, every live device of the token that no
-- page of this reconcile touched (untouched since it began, and not kept
-- aside from one of its pages) is soft-deleted, reason 'reconciled': ABM
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

REVOKE ALL ON FUNCTION ade_finish_run(bigint, text, int, int, int, int, int, int, int, int, timestamptz, text, text, boolean, text, int),
	ade_reconcile_state(bigint, int), ade_apply_reconcile_page(bigint, text, jsonb, text, boolean, text) FROM PUBLIC;

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

-- what ABM said of devices being migrated, from their stored records
UPDATE host_dep_assignments d SET mdm_migration_deadline = ade_migration_deadline(d.device)
 WHERE d.device ? 'mdm_migration_deadline';

-- the key-encryption key into the WAL, for every standby (src/kekwal.c):
-- one made before this update has none yet (issue 23)
SELECT ade_vault_init();

-- the client assertion of a Business/School Manager API account (src/apijwt.c), for tests (issue 24)
CREATE FUNCTION ade_client_assertion(client_id text, key_id text, private_key bytea,
	iat bigint, exp bigint, jti text) RETURNS text
	AS 'MODULE_PATHNAME', 'ade_client_assertion' LANGUAGE C STRICT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_client_assertion(text, text, bytea, bigint, bigint, text) IS
	'internal: the ES256 client assertion (JWT) of a Business/School Manager API account, signed with its EC P-256 private key (for tests)';
REVOKE ALL ON FUNCTION ade_client_assertion(text, text, bytea, bigint, bigint, text) FROM PUBLIC;

-- ---- reading ABM's JSON ----

-- A time of the API (ISO 8601), or null when it is not one
CREATE FUNCTION ade_api_time(p text) RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF p IS NULL OR p !~ '^\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d{1,9})?)?)?(Z|[+-]\d\d(:?\d\d)?)?$' THEN
		RETURN NULL;
	END IF;
	BEGIN
		RETURN nullif(nullif(p::timestamptz, 'infinity'), '-infinity');
	EXCEPTION WHEN data_exception THEN
		RETURN NULL;
	END;
END
$$;
COMMENT ON FUNCTION ade_api_time(text) IS 'internal: an ISO 8601 time of the Business/School Manager API, or null';

-- A string or an array of strings (ABM sends either for some attributes)
CREATE FUNCTION ade_api_texts(p jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE jsonb_typeof(p)
			 WHEN 'array' THEN ARRAY(SELECT x FROM jsonb_array_elements_text(p) x WHERE x IS NOT NULL)
			 WHEN 'string' THEN ARRAY[p #>> '{}']
		   END
$$;
COMMENT ON FUNCTION ade_api_texts(jsonb) IS 'internal: a string or an array of strings of the API, as text[]';

-- The objects of a JSON:API page's data (none when it has no array)
CREATE FUNCTION ade_api_data(p_page jsonb) RETURNS SETOF jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT e FROM jsonb_array_elements(CASE WHEN jsonb_typeof(p_page->'data') = 'array'
											THEN p_page->'data' ELSE '[]' END) e
	 WHERE jsonb_typeof(e) = 'object' AND jsonb_typeof(e->'id') = 'string'
	   AND length(e->>'id') BETWEEN 1 AND 128
$$;
COMMENT ON FUNCTION ade_api_data(jsonb) IS 'internal: the resource objects of a JSON:API page';

-- ---- the inventory: one statement per page ----

-- One page of /v1/orgDevices: every device upserted, typed, seen now
CREATE FUNCTION ade_api_store_devices(p_account bigint, p_page jsonb) RETURNS int
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	WITH d AS (
		SELECT DISTINCT ON (e->>'id') e->>'id' AS serial,
			   CASE WHEN jsonb_typeof(e->'attributes') = 'object' THEN e->'attributes' ELSE '{}' END AS a
		  FROM @extschema@.ade_api_data(p_page) e
		 ORDER BY e->>'id'
	), up AS (
		INSERT INTO @extschema@.abm_org_devices AS o (
			account_id, serial, product_family, product_type, device_model, device_capacity,
			part_number, color, status, order_number, order_at, added_to_org_at, updated_at_apple,
			purchase_source_id, purchase_source_type, imei, meid, eid, wifi_mac, bluetooth_mac,
			ethernet_mac, mdm_migration_capable, mdm_migration_status, mdm_migration_deadline,
			extra, released_at, seen_at)
		SELECT p_account, d.serial, d.a->>'productFamily', d.a->>'productType', d.a->>'deviceModel',
			   d.a->>'deviceCapacity', d.a->>'partNumber', d.a->>'color', d.a->>'status',
			   d.a->>'orderNumber', @extschema@.ade_api_time(d.a->>'orderDateTime'),
			   @extschema@.ade_api_time(d.a->>'addedToOrgDateTime'),
			   @extschema@.ade_api_time(d.a->>'updatedDateTime'),
			   coalesce(d.a->>'purchaseSourceId', d.a->>'purchaseSourceUid'), d.a->>'purchaseSourceType',
			   @extschema@.ade_api_texts(d.a->'imei'), @extschema@.ade_api_texts(d.a->'meid'),
			   d.a->>'eid', d.a->>'wifiMacAddress', d.a->>'bluetoothMacAddress',
			   @extschema@.ade_api_texts(d.a->'ethernetMacAddress'),
			   CASE jsonb_typeof(d.a->'isMdmMigrationCapable') WHEN 'boolean' THEN (d.a->'isMdmMigrationCapable')::boolean END,
			   d.a->>'mdmMigrationStatus', @extschema@.ade_api_time(d.a->>'mdmMigrationDeadlineDateTime'),
			   nullif(d.a - ARRAY['serialNumber', 'productFamily', 'productType', 'deviceModel', 'deviceCapacity',
								  'partNumber', 'color', 'status', 'orderNumber', 'orderDateTime',
								  'addedToOrgDateTime', 'updatedDateTime', 'purchaseSourceId', 'purchaseSourceUid',
								  'purchaseSourceType', 'imei', 'meid', 'eid', 'wifiMacAddress',
								  'bluetoothMacAddress', 'ethernetMacAddress', 'isMdmMigrationCapable',
								  'mdmMigrationStatus', 'mdmMigrationDeadlineDateTime',
								  'releasedFromOrgDateTime'], '{}'),
			   @extschema@.ade_api_time(d.a->>'releasedFromOrgDateTime'),
			   clock_timestamp()
		  FROM d
		ON CONFLICT (account_id, serial) DO UPDATE
		   SET product_family = excluded.product_family, product_type = excluded.product_type,
			   device_model = excluded.device_model, device_capacity = excluded.device_capacity,
			   part_number = excluded.part_number, color = excluded.color, status = excluded.status,
			   order_number = excluded.order_number, order_at = excluded.order_at,
			   added_to_org_at = excluded.added_to_org_at, updated_at_apple = excluded.updated_at_apple,
			   purchase_source_id = excluded.purchase_source_id,
			   purchase_source_type = excluded.purchase_source_type,
			   imei = excluded.imei, meid = excluded.meid, eid = excluded.eid,
			   wifi_mac = excluded.wifi_mac, bluetooth_mac = excluded.bluetooth_mac,
			   ethernet_mac = excluded.ethernet_mac,
			   mdm_migration_capable = excluded.mdm_migration_capable,
			   mdm_migration_status = excluded.mdm_migration_status,
			   mdm_migration_deadline = excluded.mdm_migration_deadline,
			   extra = excluded.extra, released_at = excluded.released_at, seen_at = excluded.seen_at,
			   missing_since = NULL
		RETURNING 1)
	SELECT count(*)::int FROM up
$$;
COMMENT ON FUNCTION ade_api_store_devices(bigint, jsonb) IS
	'internal: stores one page of /v1/orgDevices (every device, typed; unknown attributes in extra)';

-- One page of /v1/mdmServers
CREATE FUNCTION ade_api_store_servers(p_account bigint, p_page jsonb) RETURNS int
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	WITH s AS (
		SELECT DISTINCT ON (e->>'id') e->>'id' AS id,
			   CASE WHEN jsonb_typeof(e->'attributes') = 'object' THEN e->'attributes' ELSE '{}' END AS a
		  FROM @extschema@.ade_api_data(p_page) e
		 ORDER BY e->>'id'
	), up AS (
		INSERT INTO @extschema@.abm_mdm_servers AS x (account_id, id, server_name, server_type,
			created_at_apple, updated_at_apple, attributes, seen_at)
		SELECT p_account, s.id, s.a->>'serverName', s.a->>'serverType',
			   @extschema@.ade_api_time(s.a->>'createdDateTime'), @extschema@.ade_api_time(s.a->>'updatedDateTime'),
			   s.a, clock_timestamp()
		  FROM s
		ON CONFLICT (account_id, id) DO UPDATE
		   SET server_name = excluded.server_name, server_type = excluded.server_type,
			   created_at_apple = excluded.created_at_apple, updated_at_apple = excluded.updated_at_apple,
			   attributes = excluded.attributes, seen_at = excluded.seen_at
		RETURNING 1)
	SELECT count(*)::int FROM up
$$;
COMMENT ON FUNCTION ade_api_store_servers(bigint, jsonb) IS 'internal: stores one page of /v1/mdmServers';

-- One page of a server's device list: those devices are on that server
CREATE FUNCTION ade_api_store_server_devices(p_account bigint, p_server text, p_page jsonb) RETURNS int
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	WITH up AS (
		UPDATE @extschema@.abm_org_devices o
		   SET mdm_server_id = p_server, server_listed_at = clock_timestamp()
		  FROM (SELECT DISTINCT e->>'id' AS serial FROM @extschema@.ade_api_data(p_page) e) x
		 WHERE o.account_id = p_account AND o.serial = x.serial
		RETURNING 1)
	SELECT count(*)::int FROM up
$$;
COMMENT ON FUNCTION ade_api_store_server_devices(bigint, text, jsonb) IS
	'internal: stores one page of /v1/mdmServers/{id}/relationships/devices (the devices that server holds)';

-- The token of this database that an MDM server of the organisation is:
-- the token's server_uuid (ABM's server ids are it, in capitals without
-- dashes); its server name only for a token that has no uuid (a name
-- repeats across organisations, a uuid does not).  SECURITY DEFINER: ade_devices, which
-- ade_reader reads, asks it (a token id, nothing else of abm_tokens)
CREATE FUNCTION ade_api_server_token(p_account bigint, p_server text) RETURNS bigint
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT t.id
	  FROM @extschema@.abm_mdm_servers s
	  JOIN @extschema@.abm_tokens t
		ON upper(replace(t.server_uuid, '-', '')) = upper(replace(s.id, '-', ''))
		-- a name only for a token that has no uuid: names repeat across organisations
		OR (t.server_uuid IS NULL AND t.server_name IS NOT NULL AND t.server_name = s.server_name)
	 WHERE s.account_id = p_account AND s.id = p_server
	 ORDER BY upper(replace(t.server_uuid, '-', '')) = upper(replace(s.id, '-', '')) DESC NULLS LAST, t.id
	 LIMIT 1
$$;
COMMENT ON FUNCTION ade_api_server_token(bigint, text) IS
	'internal: the token of this database that an MDM server of the organisation is (by server_uuid, else name), or null';

-- What the account's inventory asks next: the phase, the server whose list
-- is read, the cursor; no row when no inventory is due (ade.inventory_interval
-- from the last complete one; p_force: now) or ABM asked to wait.  A pass
-- begins here: servers, then devices, then each server's device list.
CREATE FUNCTION ade_api_inventory_state(p_account bigint, p_interval_min int, p_force boolean,
	OUT phase text, OUT server text, OUT cursor text)
RETURNS SETOF record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a record;
BEGIN
	SELECT * INTO a FROM @extschema@.abm_api_accounts x WHERE x.id = p_account;
	IF NOT FOUND OR coalesce(a.not_before > now(), false) THEN
		RETURN;
	END IF;
	IF a.inventory_phase = 'finish' THEN
		RETURN;			-- read; ade_api_finish_pass() ends it
	END IF;
	IF a.inventory_phase IS NULL THEN
		IF NOT p_force AND (p_interval_min <= 0 OR
				coalesce(a.inventory_at > now() - make_interval(mins => p_interval_min), false)) THEN
			RETURN;
		END IF;
		UPDATE @extschema@.abm_api_accounts x
		   SET inventory_started_at = clock_timestamp(), inventory_phase = 'servers',
			   inventory_cursor = NULL, inventory_server = NULL, updated_at = now()
		 WHERE x.id = p_account;
		phase := 'servers';
		RETURN NEXT;
		RETURN;
	END IF;
	phase := a.inventory_phase;
	server := a.inventory_server;
	cursor := a.inventory_cursor;
	RETURN NEXT;
END
$$;
COMMENT ON FUNCTION ade_api_inventory_state(bigint, int, boolean) IS
	'internal: what an account''s inventory asks next (begins a pass when one is due), or no row';

-- One page of the inventory: stored, and the pass moved on (the page's
-- meta.paging.nextCursor, else the next phase or server; after the last
-- page of the last server, 'finish').  Counts what it did.
CREATE FUNCTION ade_api_inventory_page(p_account bigint, p_phase text, p_server text, p_page jsonb,
	OUT devices int, OUT servers int, OUT done boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_next text := nullif(p_page #>> '{meta,paging,nextCursor}', '');
	v_started timestamptz;
	v_server text;
BEGIN
	devices := 0; servers := 0; done := false;
	-- a page of another shape is no page: never the end of a list (which
	-- would mark every device after it released)
	IF jsonb_typeof(p_page) IS DISTINCT FROM 'object' OR jsonb_typeof(p_page->'data') IS DISTINCT FROM 'array'
	   OR jsonb_typeof(p_page #> '{meta,paging}') IS DISTINCT FROM 'object' THEN
		RAISE EXCEPTION 'ABM answered a page of the % inventory that is not a JSON:API page (data an array, meta.paging an object)', p_phase
			USING ERRCODE = 'invalid_text_representation',
				  HINT = 'Nothing of it is stored; the inventory goes on from the same page at the next run.';
	END IF;
	SELECT x.inventory_started_at INTO v_started FROM @extschema@.abm_api_accounts x
	 WHERE x.id = p_account AND x.inventory_phase = p_phase
	   AND x.inventory_server IS NOT DISTINCT FROM p_server
	   FOR UPDATE;
	IF NOT FOUND THEN
		RETURN;			-- another session moved the pass on meanwhile
	END IF;
	IF p_phase = 'servers' THEN
		servers := @extschema@.ade_api_store_servers(p_account, p_page);
	ELSIF p_phase = 'devices' THEN
		devices := @extschema@.ade_api_store_devices(p_account, p_page);
	ELSE
		devices := @extschema@.ade_api_store_server_devices(p_account, p_server, p_page);
	END IF;
	IF v_next IS NOT NULL THEN
		UPDATE @extschema@.abm_api_accounts x SET inventory_cursor = v_next, updated_at = now()
		 WHERE x.id = p_account;
		RETURN;
	END IF;
	IF p_phase = 'servers' THEN
		UPDATE @extschema@.abm_api_accounts x
		   SET inventory_phase = 'devices', inventory_cursor = NULL, updated_at = now()
		 WHERE x.id = p_account;
		RETURN;
	END IF;
	-- the next server (by id) seen in this pass, if any
	SELECT min(s.id) INTO v_server FROM @extschema@.abm_mdm_servers s
	 WHERE s.account_id = p_account AND s.seen_at >= v_started
	   AND (p_phase = 'devices' OR s.id > p_server);
	IF v_server IS NOT NULL THEN
		UPDATE @extschema@.abm_api_accounts x
		   SET inventory_phase = 'server_devices', inventory_server = v_server,
			   inventory_cursor = NULL, updated_at = now()
		 WHERE x.id = p_account;
		RETURN;
	END IF;
	-- every page read: the end of the pass is the run's last step
	-- (ade_api_finish_pass()), after every request of the run
	UPDATE @extschema@.abm_api_accounts x
	   SET inventory_phase = 'finish', inventory_cursor = NULL, inventory_server = NULL, updated_at = now()
	 WHERE x.id = p_account;
	done := true;
END
$$;
COMMENT ON FUNCTION ade_api_inventory_page(bigint, text, text, jsonb) IS
	'internal: stores one page of an account''s inventory and moves the pass on';

-- The end of a pass that began at p_started: what no page listed since is
-- released (not deleted), what no server listed is on none, servers gone
-- are forgotten; then the drift: a live assignment here whose device ABM
-- shows released, or on another server, is soft-deleted with that reason
-- (only where ABM saw it so after it last listed it as the token's:
-- listed_at, the same rule as the reconcile), and only for tokens whose
-- server this account knows (another organisation's tokens are not its).
CREATE FUNCTION ade_api_finish_inventory(p_account bigint, p_started timestamptz,
	OUT released int, OUT drifted int, OUT note text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_freed text[];
	v_note int;
	v_gone bigint;
	v_new bigint;
	v_known bigint;
BEGIN
	-- a pass that lost more than a tenth of the devices it had not already
	-- missed (a list cut short in a way no check caught, say) releases
	-- nothing and drifts nothing: it marks them missing, and the next pass
	-- releases those it does not list either (a second pass that loses
	-- others is held back the same way)
	SELECT count(*) FILTER (WHERE o.seen_at < p_started),
		   count(*) FILTER (WHERE o.seen_at < p_started AND o.missing_since IS NULL), count(*)
	  INTO v_gone, v_new, v_known
	  FROM @extschema@.abm_org_devices o
	 WHERE o.account_id = p_account AND o.released_at IS NULL;
	IF v_new > v_known / 10 THEN
		UPDATE @extschema@.abm_org_devices o SET missing_since = now()
		 WHERE o.account_id = p_account AND o.released_at IS NULL AND o.seen_at < p_started
		   AND o.missing_since IS NULL;
		UPDATE @extschema@.abm_api_accounts x
		   SET release_check = true, inventory_at = now(), inventory_started_at = NULL,
			   inventory_phase = NULL, inventory_cursor = NULL, inventory_server = NULL, updated_at = now()
		 WHERE x.id = p_account;
		released := 0;
		drifted := 0;
		note := format('the inventory did not list %s of %s devices: none is marked released until the next inventory does not list them either', v_gone, v_known);
		RETURN;
	END IF;
	WITH r AS (
		UPDATE @extschema@.abm_org_devices o
		   SET released_at = clock_timestamp(), mdm_server_id = NULL
		 WHERE o.account_id = p_account AND o.seen_at < p_started AND o.released_at IS NULL
		RETURNING 1)
	SELECT count(*) INTO released FROM r;
	UPDATE @extschema@.abm_org_devices o
	   SET mdm_server_id = NULL
	 WHERE o.account_id = p_account AND o.mdm_server_id IS NOT NULL
	   AND coalesce(o.server_listed_at, '-infinity') < p_started;
	DELETE FROM @extschema@.abm_mdm_servers s
	 WHERE s.account_id = p_account AND s.seen_at < p_started;

	-- the one lock rule with the application (src/coexist.c)
	PERFORM @extschema@.ade_lock_hosts();
	WITH ours AS (
		-- each token of this database and the server of this account it is
		SELECT DISTINCT @extschema@.ade_api_server_token(p_account, s.id) AS token_id, s.id AS server_id
		  FROM @extschema@.abm_mdm_servers s WHERE s.account_id = p_account
	), gone AS (
		UPDATE @extschema@.host_dep_assignments d
		   SET deleted_at = now(),
			   deleted_reason = CASE WHEN o.released_at IS NOT NULL THEN 'released from org' ELSE 'another server' END,
			   needs_assign = false, updated_at = now()
		  FROM @extschema@.abm_org_devices o
		 WHERE o.account_id = p_account AND d.hardware_serial = o.serial AND d.deleted_at IS NULL
		   AND EXISTS (SELECT 1 FROM ours u WHERE u.token_id = d.abm_token_id)
		   AND ((o.released_at IS NOT NULL AND coalesce(d.listed_at, '-infinity') < p_started)
				OR (o.released_at IS NULL AND o.mdm_server_id IS NOT NULL
					AND o.server_listed_at >= p_started
					AND coalesce(d.listed_at, '-infinity') < o.server_listed_at
					AND NOT EXISTS (SELECT 1 FROM ours u
									 WHERE u.token_id = d.abm_token_id AND u.server_id = o.mdm_server_id)))
		RETURNING d.host_id, d.hardware_serial, d.abm_token_id)
	SELECT array_agg(g.hardware_serial),
		   @extschema@.ade_notify_hosts(array_agg('deleted'::text), array_agg(g.host_id),
									   array_agg(g.hardware_serial), array_agg(g.abm_token_id))
	  INTO v_freed, v_note
	  FROM gone g;
	drifted := coalesce(cardinality(v_freed), 0);
	IF v_freed IS NOT NULL THEN
		PERFORM @extschema@.ade_release_tied(v_freed);
	END IF;
	UPDATE @extschema@.abm_api_accounts x
	   SET inventory_at = now(), inventory_started_at = NULL, inventory_phase = NULL,
		   inventory_cursor = NULL, inventory_server = NULL, release_check = false, updated_at = now()
	 WHERE x.id = p_account;
END
$$;
COMMENT ON FUNCTION ade_api_finish_inventory(bigint, timestamptz) IS
	'internal: ends an inventory pass: released and unassigned devices, servers gone, and the drift of live assignments';

-- The end of a pass whose pages are all read, if the account has one
CREATE FUNCTION ade_api_finish_pass(p_account bigint, OUT released int, OUT drifted int, OUT note text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_started timestamptz;
BEGIN
	SELECT x.inventory_started_at INTO v_started FROM @extschema@.abm_api_accounts x
	 WHERE x.id = p_account AND x.inventory_phase = 'finish'
	   FOR UPDATE;
	IF FOUND THEN
		SELECT f.released, f.drifted, f.note INTO released, drifted, note
		  FROM @extschema@.ade_api_finish_inventory(p_account, v_started) f;
	END IF;
END
$$;
COMMENT ON FUNCTION ade_api_finish_pass(bigint) IS
	'internal: ends the account''s inventory pass when all its pages are read';

-- ---- errors, AppleCare, activities ----

-- What an error body of the API says, in a few words: JSON:API errors
-- (code, title, detail of the first) or RFC 6749 (error, description)
CREATE FUNCTION ade_api_error(p_body text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j jsonb;
	e jsonb;
BEGIN
	BEGIN
		j := p_body::jsonb;
	EXCEPTION WHEN data_exception THEN
		RETURN 'a body that is not JSON';
	END;
	IF jsonb_typeof(j) <> 'object' THEN
		RETURN 'a body that is not a JSON object';
	END IF;
	IF jsonb_typeof(j->'errors') = 'array' AND jsonb_array_length(j->'errors') > 0 THEN
		e := j->'errors'->0;
		RETURN left(concat_ws(': ', e->>'code', e->>'title', e->>'detail'), 300);
	END IF;
	IF j ? 'error' THEN
		RETURN left(concat_ws(': ', j->>'error', j->>'error_description'), 300);
	END IF;
	RETURN 'no error in the body';
END
$$;
COMMENT ON FUNCTION ade_api_error(text) IS 'internal: what an error body of the Business/School Manager API says';

-- An answer's body as jsonb, or null when it is not JSON
CREATE FUNCTION ade_api_json(p text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN p::jsonb;
EXCEPTION WHEN OTHERS THEN		-- too deep, too large: not JSON to us (a cancel still ends it)
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_api_json(text) IS 'internal: an answer of the API as jsonb, or null when it is not JSON';

-- The AppleCare answers of a run: per serial, the body (null: 404, no
-- such device, or an error: ABM refused that one, why): the items of each
-- answered device replaced, every device asked dated (a refused one keeps
-- its items and goes to the back of the queue)
CREATE FUNCTION ade_api_store_applecare(p_account bigint, p_serials text[], p_bodies text[], p_errors text[]) RETURNS int
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	WITH a AS (
		SELECT x.serial, x.body, x.error, @extschema@.ade_api_json(x.body) AS v
		  FROM unnest(p_serials, p_bodies, p_errors) AS x(serial, body, error)
	), answered AS (
		-- an answer of the right shape, or a 404 (no coverage known)
		SELECT a.serial, a.v FROM a
		 WHERE (a.body IS NULL AND a.error IS NULL) OR jsonb_typeof(a.v->'data') = 'array'
	), gone AS (
		DELETE FROM @extschema@.abm_applecare c USING answered a
		 WHERE c.account_id = p_account AND c.serial = a.serial
		RETURNING 1
	), items AS (
		INSERT INTO @extschema@.abm_applecare (account_id, serial, item, status, payment_type, description,
			agreement_number, start_at, end_at, cancel_at, is_renewable, is_canceled, fetched_at)
		SELECT p_account, a.serial, i.n::int, i.e->'attributes'->>'status', i.e->'attributes'->>'paymentType',
			   i.e->'attributes'->>'description', i.e->'attributes'->>'agreementNumber',
			   @extschema@.ade_api_time(i.e->'attributes'->>'startDateTime'),
			   @extschema@.ade_api_time(i.e->'attributes'->>'endDateTime'),
			   @extschema@.ade_api_time(i.e->'attributes'->>'contractCancelDateTime'),
			   CASE jsonb_typeof(i.e->'attributes'->'isRenewable') WHEN 'boolean' THEN (i.e->'attributes'->'isRenewable')::boolean END,
			   CASE jsonb_typeof(i.e->'attributes'->'isCanceled') WHEN 'boolean' THEN (i.e->'attributes'->'isCanceled')::boolean END,
			   now()
		  FROM answered a
		  JOIN @extschema@.abm_org_devices o ON o.account_id = p_account AND o.serial = a.serial
		  CROSS JOIN LATERAL jsonb_array_elements(coalesce(a.v->'data', '[]')) WITH ORDINALITY AS i(e, n)
		 WHERE jsonb_typeof(i.e) = 'object' AND (SELECT count(*) FROM gone) >= 0
		RETURNING 1
	), checked AS (
		UPDATE @extschema@.abm_org_devices o SET applecare_checked_at = now()
		  FROM a WHERE o.account_id = p_account AND o.serial = a.serial
		RETURNING 1
	)
	SELECT count(*)::int FROM checked WHERE (SELECT count(*) FROM items) >= 0
$$;
COMMENT ON FUNCTION ade_api_store_applecare(bigint, text[], text[], text[]) IS
	'internal: stores the AppleCare coverage fetched for some devices (their items replaced)';

-- What the polls of activities answered: per id, the body (null: 404, the
-- activity is not known any more, or an error: the poll failed, why: kept
-- in error, the activity polled again later, after the others)
CREATE FUNCTION ade_api_store_activities(p_account bigint, p_ids text[], p_bodies text[], p_errors text[]) RETURNS int
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	WITH x AS (
		SELECT x.id, x.body, x.error, @extschema@.ade_api_json(x.body) AS v
		  FROM unnest(p_ids, p_bodies, p_errors) AS x(id, body, error)
	), up AS (
		UPDATE @extschema@.abm_device_activities a
		   SET status = CASE WHEN x.error IS NOT NULL THEN a.status
							 WHEN x.body IS NULL THEN 'NOT_FOUND'
							 ELSE coalesce(x.v->'data'->'attributes'->>'status', a.status) END,
			   sub_status = coalesce(x.v->'data'->'attributes'->>'subStatus', a.sub_status),
			   completed_at = coalesce(@extschema@.ade_api_time(x.v->'data'->'attributes'->>'completedDateTime'),
									   a.completed_at),
			   error = CASE WHEN x.error IS NOT NULL THEN left(x.error, 300)
							WHEN x.body IS NOT NULL AND x.v IS NULL THEN 'the poll''s answer is not JSON'
							ELSE a.error END,
			   polled_at = now()
		  FROM x
		 WHERE a.account_id = p_account AND a.id = x.id
		RETURNING 1)
	SELECT count(*)::int FROM up
$$;
COMMENT ON FUNCTION ade_api_store_activities(bigint, text[], text[], text[]) IS 'internal: stores what the polls of activities answered';

-- The request that starts an activity: the server (by id, else by name,
-- among the accounts' servers) and the body, checked first
CREATE FUNCTION ade_api_activity_request(p_server text, p_serials text[], p_type text,
	OUT account_id bigint, OUT server_id text, OUT body text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_n int;
	v_serials text[];
BEGIN
	SELECT array_agg(DISTINCT s ORDER BY s) INTO v_serials FROM unnest(p_serials) s;
	IF v_serials IS NULL OR array_position(v_serials, NULL) IS NOT NULL OR '' = ANY (v_serials) THEN
		RAISE EXCEPTION 'serials must be a non-empty array of serial numbers, none NULL or empty'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF cardinality(v_serials) > 1000 THEN
		RAISE EXCEPTION '% serials: one activity takes at most 1000', cardinality(v_serials)
			USING ERRCODE = 'program_limit_exceeded',
				  HINT = 'Start one activity per 1000 serials.';
	END IF;
	SELECT count(*) INTO v_n FROM @extschema@.abm_mdm_servers s WHERE s.id = p_server;
	IF v_n = 0 THEN
		SELECT count(*) INTO v_n FROM @extschema@.abm_mdm_servers s WHERE s.server_name = p_server;
		IF v_n > 1 THEN
			RAISE EXCEPTION 'more than one MDM server is named %', quote_literal(p_server)
				USING ERRCODE = 'ambiguous_parameter',
					  HINT = 'Give its id: SELECT id, server_name FROM abm_mdm_servers.';
		END IF;
		SELECT s.account_id, s.id INTO account_id, server_id
		  FROM @extschema@.abm_mdm_servers s WHERE s.server_name = p_server;
	ELSE
		SELECT s.account_id, s.id INTO account_id, server_id
		  FROM @extschema@.abm_mdm_servers s WHERE s.id = p_server ORDER BY s.account_id LIMIT 1;
	END IF;
	IF server_id IS NULL THEN
		RAISE EXCEPTION 'no MDM server has the id or name %', quote_literal(p_server)
			USING ERRCODE = 'no_data_found',
				  HINT = 'SELECT id, server_name FROM abm_mdm_servers lists those the last inventory found (ade_inventory_sync()).';
	END IF;
	body := jsonb_build_object('data', jsonb_build_object(
		'type', 'orgDeviceActivities',
		'attributes', jsonb_build_object('activityType', p_type),
		'relationships', jsonb_build_object(
			'mdmServer', jsonb_build_object('data', jsonb_build_object('type', 'mdmServers', 'id', server_id)),
			'devices', jsonb_build_object('data',
				(SELECT jsonb_agg(jsonb_build_object('type', 'orgDevices', 'id', s) ORDER BY s)
				   FROM unnest(v_serials) s)))))::text;
END
$$;
COMMENT ON FUNCTION ade_api_activity_request(text, text[], text) IS
	'internal: checks an activity''s serials and server and builds the request''s body';

-- A new activity, as ABM's 201 described it (or, p_error: no clear answer,
-- kept as UNKNOWN under an id of ours); its id
CREATE FUNCTION ade_api_store_new_activity(p_account bigint, p_type text, p_server text, p_serials text[],
	p_answer jsonb, p_error text) RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	INSERT INTO @extschema@.abm_device_activities (id, account_id, activity_type, mdm_server_id, serials,
		status, sub_status, created_at, error)
	SELECT coalesce(p_answer->'data'->>'id', 'unknown-' || md5(random()::text || clock_timestamp()::text)),
		   p_account, p_type, p_server,
		   (SELECT array_agg(DISTINCT s ORDER BY s) FROM unnest(p_serials) s),
		   CASE WHEN p_error IS NOT NULL THEN 'UNKNOWN'
				ELSE coalesce(p_answer->'data'->'attributes'->>'status', 'IN_PROGRESS') END,
		   p_answer->'data'->'attributes'->>'subStatus',
		   coalesce(@extschema@.ade_api_time(p_answer->'data'->'attributes'->>'createdDateTime'), now()),
		   p_error
	RETURNING id
$$;
COMMENT ON FUNCTION ade_api_store_new_activity(bigint, text, text, text[], jsonb, text) IS
	'internal: records an activity just started (or one whose start got no clear answer)';

-- ---- the functions of the spec ----

CREATE FUNCTION ade_add_api_account(client_id text, key_id text, private_key bytea) RETURNS bigint
	AS 'MODULE_PATHNAME', 'ade_add_api_account' LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_add_api_account(text, text, bytea) IS
	'stores a Business/School Manager API account (the key sealed) once a first access token proves it works; the same client_id again replaces its key';

CREATE FUNCTION ade_remove_api_account(account_id bigint) RETURNS void
	AS 'MODULE_PATHNAME', 'ade_remove_api_account' LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_remove_api_account(bigint) IS 'forgets an API account and its inventory';

CREATE FUNCTION ade_inventory_sync()
RETURNS TABLE (account_id bigint, devices int, servers int, applecare int, activities int, error text)
	AS 'MODULE_PATHNAME', 'ade_inventory_sync' LANGUAGE C VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_inventory_sync() IS
	'one inventory of every API account now (begun now where none is under way), its activities polled, some AppleCare';

CREATE FUNCTION ade_refresh_applecare(serials text[]) RETURNS int
	AS 'MODULE_PATHNAME', 'ade_refresh_applecare' LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_refresh_applecare(text[]) IS
	'fetches the AppleCare coverage of these devices now (one request each); how many were';

CREATE FUNCTION ade_assign_devices(serials text[], mdm_server text) RETURNS text
	AS 'MODULE_PATHNAME', 'ade_assign_devices' LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_assign_devices(text[], text) IS
	'starts an ASSIGN_DEVICES activity (the server by id or name); its id, polled by later runs';

CREATE FUNCTION ade_unassign_devices(serials text[], mdm_server text) RETURNS text
	AS 'MODULE_PATHNAME', 'ade_unassign_devices' LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_unassign_devices(text[], text) IS
	'starts an UNASSIGN_DEVICES activity (the server by id or name); its id, polled by later runs';

REVOKE ALL ON FUNCTION ade_add_api_account(text, text, bytea), ade_remove_api_account(bigint),
	ade_inventory_sync(), ade_refresh_applecare(text[]), ade_assign_devices(text[], text),
	ade_unassign_devices(text[], text), ade_api_time(text), ade_api_texts(jsonb), ade_api_data(jsonb),
	ade_api_store_devices(bigint, jsonb), ade_api_store_servers(bigint, jsonb),
	ade_api_store_server_devices(bigint, text, jsonb), ade_api_server_token(bigint, text),
	ade_api_inventory_state(bigint, int, boolean), ade_api_inventory_page(bigint, text, text, jsonb),
	ade_api_finish_inventory(bigint, timestamptz), ade_api_finish_pass(bigint), ade_api_error(text),
	ade_api_store_applecare(bigint, text[], text[], text[]), ade_api_store_activities(bigint, text[], text[], text[]),
	ade_api_json(text),
	ade_api_activity_request(text, text[], text),
	ade_api_store_new_activity(bigint, text, text, text[], jsonb, text) FROM PUBLIC;

-- ---- the view ----

-- Every device of the organisation next to this database's view of it
CREATE VIEW ade_devices AS
SELECT o.serial,
	   o.account_id,
	   o.product_family,
	   o.device_model,
	   o.purchase_source_type,
	   o.purchase_source_id,
	   o.order_number,
	   o.mdm_server_id,
	   s.server_name AS mdm_server_name,
	   (@extschema@.ade_api_server_token(s.account_id, s.id) IS NOT NULL) AS assigned_to_us,
	   d.host_id,
	   coalesce(d.deleted_at IS NULL AND d.host_id IS NOT NULL, false) AS live,
	   d.assign_profile_response AS profile_status,
	   ac.status AS applecare_status,
	   ac.end_at AS applecare_end,
	   o.released_at,
	   o.seen_at
  FROM @extschema@.abm_org_devices o
  LEFT JOIN @extschema@.abm_mdm_servers s
	ON s.account_id OPERATOR(pg_catalog.=) o.account_id AND s.id OPERATOR(pg_catalog.=) o.mdm_server_id
  LEFT JOIN @extschema@.host_dep_assignments d ON d.hardware_serial OPERATOR(pg_catalog.=) o.serial
  LEFT JOIN LATERAL (
	SELECT c.status, c.end_at FROM @extschema@.abm_applecare c
	 WHERE c.account_id OPERATOR(pg_catalog.=) o.account_id AND c.serial OPERATOR(pg_catalog.=) o.serial
	 ORDER BY (c.status OPERATOR(pg_catalog.=) 'ACTIVE') DESC, c.end_at DESC NULLS LAST
	 LIMIT 1) ac ON true;
COMMENT ON VIEW ade_devices IS
	'every device of the organisation (Business/School Manager API) next to this database''s view of it: server, host, live assignment, profile, AppleCare';
REVOKE ALL ON ade_devices FROM PUBLIC;
GRANT SELECT ON ade_devices TO ade_reader;
GRANT EXECUTE ON FUNCTION ade_api_server_token(bigint, text) TO ade_reader;

-- the API accounts' secrets are sealed with the data keys too
CREATE OR REPLACE VIEW ade_secret_key_usage AS
WITH sealed(v) AS (
	SELECT s.consumer_secret FROM @extschema@.ade_token_secrets s
	UNION ALL SELECT s.access_token FROM @extschema@.ade_token_secrets s
	UNION ALL SELECT s.access_secret FROM @extschema@.ade_token_secrets s
	UNION ALL SELECT s.session_token FROM @extschema@.ade_token_secrets s WHERE s.session_token IS NOT NULL
	UNION ALL SELECT k.private_key FROM @extschema@.ade_keypair k
	UNION ALL SELECT a.private_key FROM @extschema@.abm_api_accounts a
	UNION ALL SELECT a.access_token FROM @extschema@.abm_api_accounts a WHERE a.access_token IS NOT NULL
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
