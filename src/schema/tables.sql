/*-------------------------------------------------------------------------
 *
 * tables.sql
 *		Source of the ade install script: every table, its indexes, the
 *		role ade_reader, and who may read what.
 *
 * Owns the data: abm_tokens (one per ABM server token) and its secrets,
 * ade_removed_tokens (what adding a removed token back restores), the MDM
 * key pair and the data keys that seal the secrets, hosts and
 * host_dep_assignments (the device rows, as in Fleet), ade_sync_runs (the
 * run history), ade_rejected_records and ade_tied_records (device records
 * kept aside: refused, or waiting for another token's delete of the same
 * second), teams, the profile tables, and the per-device overrides and
 * the log of device calls (devices.sql).
 * The functions that write them live in the files named after their
 * concern (sync.sql, profiles.sql, ...); this file only says what is
 * stored, in which shape, and who may read it.
 *
 * Why it looks like this:
 * - No foreign key from host_dep_assignments to hosts: the host-delete
 *   trigger (hosts.sql) re-creates deleted hosts with the same id, and a
 *   soft-deleted assignment outlives its host.  The serial is kept on the
 *   assignment so that a device whose host row is gone is matched again.
 * - hosts.team_id is checked by triggers (teams.sql), not a foreign key:
 *   a foreign key queues a check for every row the sync writes.  Nor the
 *   default teams of abm_tokens: the application's delete of a team would
 *   fail under REPEATABLE READ on a token row a page wrote since its
 *   snapshot (teams.sql).
 * - Secrets (token credentials, ABM session tokens, the private key) live
 *   in ade_token_secrets and ade_keypair, sealed with AES-256-GCM under the
 *   data keys of ade_secret_keys (src/vault.c), readable by the extension
 *   owner only.
 * - Every table and sequence with data is registered with pg_extension_config_dump,
 *   so that pg_dump carries the data.
 * - Nothing is granted to PUBLIC.  ade_reader (created once per cluster:
 *   roles are cluster-wide) reads hosts, host_dep_assignments,
 *   ade_sync_runs, ade_rejected_records and the status views (status.sql).
 *   An application role that the admin grants DML on hosts can delete,
 *   truncate and update hosts: the triggers on hosts run as the extension
 *   owner (hosts.sql, teams.sql).
 *
 * The install script ade--<version>.sql is built from the files of src/schema/ by
 * make, in the order the Makefile lists them; upgrades from released
 * versions are the hand-written sql/ade--<from>--<to>.sql.
 *
 * IDENTIFICATION
 *	  src/schema/tables.sql
 *
 *-------------------------------------------------------------------------
 */

-- ade makes its tables in the schema it is installed in, under plain names
-- (hosts, teams: the names an MDM's own schema may use already).  A schema
-- that has one of them is refused up front, with every name that is taken
-- and what to do, rather than with PostgreSQL's bare "relation already
-- exists" for the first one.  (The list is every relation ade makes:
-- test/t/76_second_day.sql checks it against the installed extension.)
DO $$
DECLARE
	v_taken text;
BEGIN
	SELECT pg_catalog.string_agg(pg_catalog.format('%s %I',
			CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
				WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' WHEN 'i' THEN 'index'
				WHEN 'f' THEN 'foreign table' ELSE 'type' END, c.relname), ', ' ORDER BY c.relname)
	  INTO v_taken
	  FROM pg_catalog.pg_class c
	 WHERE c.relnamespace OPERATOR(pg_catalog.=) $q$@extschema@$q$::pg_catalog.regnamespace
	   AND c.relname OPERATOR(pg_catalog.=) ANY (ARRAY[
			'abm_tokens', 'abm_tokens_id_seq', 'abm_tokens_pkey', 'abm_tokens_consumer_key_key',
			'ade_keypair', 'ade_keypair_pkey',
			'ade_profile_applied', 'ade_profile_applied_pkey',
			'ade_profile_definitions', 'ade_profile_definitions_pkey',
			'ade_profiles', 'ade_profiles_id_seq', 'ade_profiles_pkey', 'ade_profiles_scope',
			'ade_rejected_records', 'ade_rejected_records_id_seq', 'ade_rejected_records_pkey',
			'ade_rejected_records_key', 'ade_rejected_records_due_idx', 'ade_rejected_records_serial_idx',
			'ade_rate_limits', 'ade_rate_limits_pkey',
			'ade_removed_tokens', 'ade_removed_tokens_pkey', 'ade_removed_tokens_consumer_key_key',
			'ade_secret_keys', 'ade_secret_keys_pkey', 'ade_secret_keys_current_idx',
			'ade_sync_runs', 'ade_sync_runs_id_seq', 'ade_sync_runs_pkey', 'ade_sync_runs_started_idx',
			'ade_sync_runs_token_idx',
			'ade_tied_records', 'ade_tied_records_pkey',
			'ade_token_secrets', 'ade_token_secrets_pkey',
			'ade_truncated_hosts', 'ade_truncated_hosts_pkey',
			'ade_device_pins', 'ade_device_pins_pkey', 'ade_device_actions', 'ade_device_actions_pkey',
			'ade_device_actions_id_seq', 'ade_device_actions_serial', 'ade_device_actions_call',
			'ade_device_actions_details',
			'ade_device_call_seq', 'ade_device_overrides',
			'host_dep_assignments', 'host_dep_assignments_pkey', 'host_dep_assignments_due_idx',
			'host_dep_assignments_hardware_serial_key', 'host_dep_assignments_migration_idx',
			'hosts', 'hosts_id_seq', 'hosts_pkey', 'hosts_hardware_serial_key', 'hosts_team_idx',
			'teams', 'teams_id_seq', 'teams_pkey', 'teams_name_key',
			'abm_api_accounts', 'abm_api_accounts_pkey', 'abm_api_accounts_id_seq',
			'abm_api_accounts_client_id_key', 'abm_mdm_servers', 'abm_mdm_servers_pkey',
			'abm_org_devices', 'abm_org_devices_pkey', 'abm_org_devices_serial',
			'abm_org_devices_applecare', 'abm_applecare', 'abm_applecare_pkey',
			'abm_device_activities', 'abm_device_activities_pkey', 'abm_device_activities_open',
			'ade_devices',
			'ade_secret_key_usage', 'ade_status', 'ade_team_status']::pg_catalog.name[]);
	IF v_taken IS NOT NULL THEN
		RAISE EXCEPTION 'schema % already has %', $q$@extschema@$q$, v_taken
			USING ERRCODE = 'duplicate_table',
				  DETAIL = 'ade makes these itself, and keeps its own rows in them.',
				  HINT = 'Install ade into a schema of its own: CREATE SCHEMA mdm; CREATE EXTENSION ade SCHEMA mdm; (README, Installing by hand), or rename yours first.';
	END IF;
END
$$;

-- Teams of hosts; each token names a default team per platform.
CREATE TABLE teams (
	id				bigserial PRIMARY KEY,
	name			text NOT NULL UNIQUE,
	created_at		timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE teams IS 'teams of hosts; each token names a default team per platform';

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
	updated_at		timestamptz NOT NULL DEFAULT now(),
	-- the team a host new to this token lands in, per platform (tvOS and
	-- visionOS follow iOS); set with ade_set_default_teams()
	-- (no foreign key: teams.sql, ade_teams_after_delete())
	macos_team_id	bigint,
	ios_team_id		bigint,
	ipados_team_id	bigint,
	-- ABM throttled PUT /profile/devices with a Retry-After past
	-- ade.max_retry_wait: no device of the token is sent before this
	assign_not_before timestamptz,
	-- restored in place (ade_add_token() after ade_remove_token()) with its
	-- devices, on the word of its cursor: null once a page of that cursor
	-- answered; a full fetch before that soft-deletes the devices it does
	-- not list
	restored_at		timestamptz,
	-- reconcile (a full fetch beside the sync that soft-deletes what ABM no
	-- longer lists): asked for (ade_request_reconcile()), its own fetch
	-- cursor while it runs, when it began and when one last completed
	reconcile_due	boolean NOT NULL DEFAULT false,
	reconcile_asked_at timestamptz,	-- when it was last asked for (a request, a release that may have been done)
	reconcile_requested_at timestamptz,	-- the last ade_request_reconcile() (ade.min_refetch_interval)
	reconcile_cursor text,
	reconcile_started_at timestamptz,
	reconciled_at	timestamptz
);
COMMENT ON TABLE abm_tokens IS 'ABM server tokens (no secrets: those are in ade_token_secrets)';

-- Tokens removed with ade_remove_token(): what adding the same token back
-- (the same consumer_key) restores in place: its id, cursor and mode, and
-- the devices the removal soft-deleted.  No secret is kept.
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

-- The secrets of each token, and its cached ABM session.  Owner only, and
-- sealed (AES-256-GCM, bound to their row and column) with a data key of
-- ade_secret_keys, itself sealed with a key file of the data directory
-- (src/vault.c): a dump alone does not carry a working token.
CREATE TABLE ade_token_secrets (
	token_id		bigint PRIMARY KEY REFERENCES abm_tokens (id) ON DELETE CASCADE,
	consumer_secret text NOT NULL,
	access_token	text NOT NULL,
	access_secret	text NOT NULL,
	session_token	text,
	session_at		timestamptz
);
COMMENT ON TABLE ade_token_secrets IS 'ABM token secrets and session tokens; readable by the extension owner only';

-- The data keys that seal the secrets (src/vault.c), each sealed in turn
-- with the key-encryption key, a file of the data directory (ade_kek.key)
-- made once: a rotation adds a row and needs no file copied, and a standby
-- has every key.  One is current.  Owner only.
CREATE TABLE ade_secret_keys (
	id				text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{8}$'),
	wrapped			bytea NOT NULL,	-- the data key, sealed with the key-encryption key
	current			boolean NOT NULL DEFAULT false,
	created_at		timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ade_secret_keys_current_idx ON ade_secret_keys (current) WHERE current;
COMMENT ON TABLE ade_secret_keys IS 'the data keys that seal the stored secrets, sealed with the key-encryption key file; readable by the extension owner only';

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
	updated_at		timestamptz NOT NULL DEFAULT now(),
	team_id			bigint			-- checked by triggers (teams.sql)
);
CREATE INDEX hosts_team_idx ON hosts (team_id) WHERE team_id IS NOT NULL;
COMMENT ON TABLE hosts IS 'one row per device; ADE devices are created by ade_sync()';

-- One row per host that ABM has listed (see the header for why there is no
-- foreign key to hosts).
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
	updated_at		timestamptz NOT NULL DEFAULT now(),
	assign_sent_at	timestamptz,	-- when it was last sent in a PUT /profile/devices
	-- why deleted_at is set: ABM's delete, a reconcile (not in ABM's full
	-- list), a release (ade_release_devices()), its token removed
	deleted_reason	text CHECK (deleted_reason IN ('deleted', 'reconciled', 'released', 'token removed',
										   'released from org', 'another server')),
	-- ABM's mdm_migration_deadline of the device (a migration from another MDM)
	mdm_migration_deadline timestamptz,
	-- when ABM last said the device is its token's: a record applied, or a
	-- page of a reconcile that listed it (sync.sql; the clock's time)
	listed_at		timestamptz
);
-- the devices that wait for a profile: what every run looks at
CREATE INDEX host_dep_assignments_due_idx ON host_dep_assignments (abm_token_id, retry_at)
	WHERE needs_assign AND deleted_at IS NULL;
CREATE INDEX host_dep_assignments_migration_idx ON host_dep_assignments (mdm_migration_deadline)
	WHERE mdm_migration_deadline IS NOT NULL AND deleted_at IS NULL;
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
	note			text,
	reconciled		int NOT NULL DEFAULT 0	-- live devices a reconcile soft-deleted
);
CREATE INDEX ade_sync_runs_token_idx ON ade_sync_runs (token_id, started_at);
CREATE INDEX ade_sync_runs_started_idx ON ade_sync_runs (started_at);
COMMENT ON TABLE ade_sync_runs IS 'history: one row per token per committed ade_sync() run';

-- Enrollment profiles (Apple's profile object) per scope; all scope columns
-- null = the organisation-wide default.  A team profile has team_id alone.
CREATE TABLE ade_profiles (
	id				bigserial PRIMARY KEY,
	token_id		bigint REFERENCES abm_tokens (id) ON DELETE CASCADE,
	platform		text CHECK (platform IN ('darwin', 'ios', 'ipados', 'tvos', 'visionos')),
	team_id			bigint,
	profile			jsonb NOT NULL,
	updated_at		timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT ade_profiles_scope UNIQUE NULLS NOT DISTINCT (token_id, platform, team_id),
	CONSTRAINT ade_profiles_team_fk FOREIGN KEY (team_id) REFERENCES teams (id) ON DELETE CASCADE
);
COMMENT ON TABLE ade_profiles IS 'enrollment profiles by scope (token, platform, team); set with ade_set_profile()';

-- Each (profile, token) is defined once at Apple: POST /profile -> profile_uuid.
-- A changed profile has another key and is defined again.  A profile ABM
-- refused (a 400 with its reason) is kept as refused, and
-- ade_status.attention says why: it is sent again when set again, or after
-- ade.failed_retry_interval (a changed profile is another key).
CREATE TABLE ade_profile_definitions (
	token_id		bigint NOT NULL REFERENCES abm_tokens (id) ON DELETE CASCADE,
	profile_key		text NOT NULL,	-- md5 of the profile's jsonb text
	profile_uuid	text,			-- null: refused
	defined_at		timestamptz NOT NULL DEFAULT now(),
	refusal			text,			-- ABM's answer when it refused the profile
	PRIMARY KEY (token_id, profile_key),
	CHECK ((profile_uuid IS NULL) <> (refusal IS NULL))
);
COMMENT ON TABLE ade_profile_definitions IS 'the profile_uuid Apple gave each (profile, token)';

-- The profile key that applied to each (token, scope) at the last run: a
-- change (ade_set_profile, ade.enroll_url, a team's profile) marks the
-- devices it applies to.  A scope is '<team id, 0 for none>/<platform>', as
-- in ade_device_profiles() (profiles.sql).
-- 0.1 to 0.3 kept it per platform, in a column of that name: a dump made
-- under them restores here (pg_dump records no version, so a restore makes
-- the current one), into the column platform, and its rows are dropped as
-- they come (the trigger below); the next run works the state out again,
-- sending nothing to a device that holds its profile.
CREATE TABLE ade_profile_applied (
	token_id		bigint NOT NULL REFERENCES abm_tokens (id) ON DELETE CASCADE,
	scope			text NOT NULL,
	profile_key		text,
	platform		text,		-- only ever set by a dump of 0.1 to 0.3
	PRIMARY KEY (token_id, scope)
);
COMMENT ON TABLE ade_profile_applied IS 'internal: the profile that applied to each token and scope (team and platform) at its last run';
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

-- Device records from ABM that could not be applied (a constraint, bad
-- data, a trigger of the application's): kept here with the reason, so that
-- no record is dropped silently and no bad record stops its token (the rest
-- of its page applies and the cursor moves on).  Each run tries the due
-- ones again.  One row per serial and token, the latest record (a token's
-- stream is in order); a record that applies replaces what is kept of its
-- serial when it is news to it: a later record of the same token, or a
-- newer record of another token that took effect (sync.sql).  A record
-- without a serial is kept once however often ABM sends it.  The key is a
-- hash of the serial: a serial too long for a btree is kept too.
-- ade_status.attention counts them.  They stay while their token is removed
-- (ade_remove_token), and are tried again once it is added back.
CREATE TABLE ade_rejected_records (
	id				bigserial PRIMARY KEY,
	token_id		bigint NOT NULL,	-- no foreign key: kept while the token is removed
	hardware_serial text,			-- null: the record had none
	record			jsonb NOT NULL,	-- as ABM sent it
	from_fetch		boolean NOT NULL,	-- from a full fetch: it means "added"
	fetched_until	timestamptz,	-- of a fetched record (which has no op_date)
	op_date			timestamptz,	-- its op_date (fetched: fetched_until); null: not a date
	reason			text NOT NULL,
	sqlstate		text,
	rejected_at		timestamptz NOT NULL DEFAULT now(),
	tries			int NOT NULL DEFAULT 1,
	retry_at		timestamptz		-- null: never tried again (no serial)
);
CREATE UNIQUE INDEX ade_rejected_records_key ON ade_rejected_records
	(token_id, (hardware_serial IS NULL), md5(coalesce(hardware_serial, record::text)));
CREATE INDEX ade_rejected_records_serial_idx ON ade_rejected_records USING hash (hardware_serial);
CREATE INDEX ade_rejected_records_due_idx ON ade_rejected_records (token_id, retry_at);
COMMENT ON TABLE ade_rejected_records IS 'device records from ABM that could not be applied, with the reason; tried again by later runs';

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

-- Records of a token about a device another token holds live, with the
-- same op_date as the holder's last record: ABM's op_date has whole
-- seconds, and across tokens the order within one second is unknown (a
-- device moved from B to A shows as B's delete and A's add, which may come
-- in either order).  Kept until the holder's delete of that second comes:
-- then the device goes to the token of the tied record (sync.sql).  A
-- later record of the same token, or a newer record that took effect,
-- makes it moot.
CREATE TABLE ade_tied_records (
	hardware_serial text NOT NULL,
	token_id		bigint NOT NULL REFERENCES abm_tokens (id) ON DELETE CASCADE,
	record			jsonb NOT NULL,
	from_fetch		boolean NOT NULL,
	op_date			timestamptz NOT NULL,
	PRIMARY KEY (hardware_serial, token_id)
);
COMMENT ON TABLE ade_tied_records IS 'internal: records of a device another token holds, of the same second as its last record; they apply when it lets go';

-- internal: the hosts a TRUNCATE takes away, kept by its BEFORE trigger for
-- its AFTER trigger within the same statement (hosts.sql); always empty
-- between statements
CREATE UNLOGGED TABLE ade_truncated_hosts (
	id				bigint PRIMARY KEY,
	hardware_model	text,
	platform		text,
	team_id			bigint
);
COMMENT ON TABLE ade_truncated_hosts IS 'internal: hosts taken away by a TRUNCATE, for the trigger that makes the live ones again';

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
SELECT pg_catalog.pg_extension_config_dump('teams', '');
SELECT pg_catalog.pg_extension_config_dump('teams_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ade_rejected_records', '');
SELECT pg_catalog.pg_extension_config_dump('ade_rejected_records_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ade_tied_records', '');
SELECT pg_catalog.pg_extension_config_dump('ade_rate_limits', '');
SELECT pg_catalog.pg_extension_config_dump('ade_secret_keys', '');
SELECT pg_catalog.pg_extension_config_dump('ade_removed_tokens', '');
SELECT pg_catalog.pg_extension_config_dump('ade_device_pins', '');
SELECT pg_catalog.pg_extension_config_dump('ade_device_actions', '');
SELECT pg_catalog.pg_extension_config_dump('ade_device_actions_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ade_device_call_seq', '');
SELECT pg_catalog.pg_extension_config_dump('abm_api_accounts', '');
SELECT pg_catalog.pg_extension_config_dump('abm_api_accounts_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('abm_mdm_servers', '');
SELECT pg_catalog.pg_extension_config_dump('abm_org_devices', '');
SELECT pg_catalog.pg_extension_config_dump('abm_applecare', '');
SELECT pg_catalog.pg_extension_config_dump('abm_device_activities', '');

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
	host_dep_assignments, ade_sync_runs, ade_profiles,
	ade_profile_definitions, ade_profile_applied, teams,
	ade_rejected_records, ade_tied_records, ade_truncated_hosts, ade_secret_keys,
	ade_removed_tokens, ade_rate_limits, ade_device_pins, ade_device_actions,
	abm_api_accounts, abm_mdm_servers, abm_org_devices, abm_applecare, abm_device_activities FROM PUBLIC;
REVOKE ALL ON SEQUENCE ade_device_call_seq FROM PUBLIC;
GRANT SELECT ON hosts, host_dep_assignments, ade_sync_runs, ade_rejected_records,
	ade_rate_limits, ade_device_actions, abm_mdm_servers, abm_org_devices, abm_applecare,
	abm_device_activities TO ade_reader;
