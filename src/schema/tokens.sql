/*-------------------------------------------------------------------------
 *
 * tokens.sql
 *		Source of the ade install script: the MDM key pair, ABM server
 *		tokens and the secrets that come with them.
 *
 * Owns the SQL side of src/token.c (key pair, token envelope), src/abm.c
 * (GET /account), src/oauth.c (the signature, for tests) and src/vault.c
 * (secrets sealed at rest): their declarations; a token's row as it is
 * added, renewed, or restored in place after ade_remove_token()
 * (ade_token_row(), ade_removed_tokens); ade_secret_key_usage, the keys
 * still in use, and the trigger that keeps one in use from being deleted;
 * the key-encryption key file made at install (ade_vault_init()).
 * The C functions do the cryptography and the HTTP; what they store is in
 * abm_tokens, ade_token_secrets and ade_keypair (tables.sql).
 *
 * Every function here but ade_oauth_signature() (a pure function of its
 * arguments, for tests) touches a secret or ABM, so none of those is
 * executable by PUBLIC (the owner grants them as needed).  Their queries name the
 * extension's objects with its schema; the pinned search_path keeps a
 * hostile function or operator in another schema from standing in for a
 * built-in one.
 *
 * IDENTIFICATION
 *	  src/schema/tokens.sql
 *
 *-------------------------------------------------------------------------
 */

CREATE FUNCTION ade_public_key() RETURNS text
	AS 'MODULE_PATHNAME', 'ade_public_key' LANGUAGE C STRICT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_public_key() IS
	'PEM certificate of the MDM server key pair to upload to ABM; generated on first call';

-- The key comes as bytes (a server file read with pg_read_binary_file(), or
-- a client's file sent outside the statement text), never as text pasted
-- into a statement: pg_stat_activity, statement logs and the server log of
-- any error would show it, and whoever has it decrypts every future token.
CREATE FUNCTION ade_import_key(private_key bytea, certificate bytea DEFAULT NULL) RETURNS text
	AS 'MODULE_PATHNAME', 'ade_import_key_bytea' LANGUAGE C VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_import_key(bytea, bytea) IS
	'replaces the MDM server key pair with a PEM private key file''s bytes (and its certificate, else a new self-signed one); returns the certificate';

-- A key pasted into the statement (a quoted literal resolves to text): it
-- works, with a WARNING that says what it exposed (an error would make the
-- server log quote the statement).
CREATE FUNCTION ade_import_key(private_key text, certificate text DEFAULT NULL) RETURNS text
	AS 'MODULE_PATHNAME', 'ade_import_key' LANGUAGE C VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_import_key(text, text) IS
	'replaces the MDM server key pair from PEM text pasted into the statement, with a WARNING: pass the file''s bytes instead';

CREATE FUNCTION ade_add_token(token bytea) RETURNS bigint
	AS 'MODULE_PATHNAME', 'ade_add_token' LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_add_token(bytea) IS
	'decrypts an ABM server token (.p7m), checks it with GET /account, stores it; the same consumer_key renews in place';

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

-- The backups to take before DROP EXTENSION ade (README, Uninstalling):
-- the key pair as one PEM file (ade_import_key() takes it back whole, the
-- certificate ABM knows included), and each token as the .p7m ABM would
-- hand out for that key pair (ade_add_token() takes it back).  The owner's
-- only: the first is the key every token is encrypted to.
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

CREATE FUNCTION ade_refresh_account(token_id bigint) RETURNS void
	AS 'MODULE_PATHNAME', 'ade_refresh_account' LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_refresh_account(bigint) IS
	'calls GET /account for a stored token and updates org_name, apple_id, server_name';

CREATE FUNCTION ade_rotate_secret_key() RETURNS text
	AS 'MODULE_PATHNAME', 'ade_rotate_secret_key' LANGUAGE C STRICT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_rotate_secret_key() IS
	'makes a new data key (in ade_secret_keys, sealed with the key-encryption key) and re-seals every stored secret with it; returns its id';

-- The upgrade from 0.3: the secrets sealed with 0.3's key files, re-sealed
-- with a data key, bound to their place (called by ade--0.3--0.4.sql).
CREATE FUNCTION ade_vault_upgrade() RETURNS void
	AS 'MODULE_PATHNAME', 'ade_vault_upgrade' LANGUAGE C STRICT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_vault_upgrade() IS
	'internal: re-seals the secrets of 0.3 with a data key (the upgrade to 0.4)';

-- What is wrong with the keys, in words, for ade_status.attention (which
-- ade_reader reads): SECURITY DEFINER, says nothing but whether the
-- key-encryption key file is there.
CREATE FUNCTION ade_secret_status() RETURNS text
	AS 'MODULE_PATHNAME', 'ade_secret_status' LANGUAGE C VOLATILE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_secret_status() IS
	'what, if anything, is wrong with the key-encryption key file, in words; null when nothing';

-- Every key a stored secret is sealed with, and how many: the one query to
-- run before deleting a 0.3 key file or a row of ade_secret_keys (a key
-- with sealed_values 0 that is not current is no longer used).
CREATE VIEW ade_secret_key_usage AS
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
COMMENT ON VIEW ade_secret_key_usage IS
	'every key a stored secret is sealed with, and how many secrets; a key not current with none is no longer used';

-- A data key still in use cannot be deleted, renamed or replaced: the
-- check runs once a sealer that holds the key (FOR KEY SHARE, src/vault.c)
-- has committed, so it sees what that sealed.
CREATE FUNCTION ade_secret_keys_in_use() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	IF TG_OP = 'UPDATE' AND NEW.id = OLD.id AND NEW.wrapped = OLD.wrapped THEN
		RETURN NEW;				-- current moves with a rotation
	END IF;
	SELECT u.sealed_values INTO n FROM @extschema@.ade_secret_key_usage u WHERE u.key_id = OLD.id;
	IF coalesce(n, 0) > 0 THEN
		RAISE EXCEPTION 'data key % still seals % stored values', OLD.id, n
			USING ERRCODE = 'object_in_use',
				  HINT = 'SELECT ade_rotate_secret_key() re-seals every value with a new key; then the old one may go.';
	END IF;
	IF TG_OP = 'UPDATE' THEN
		RETURN NEW;
	END IF;
	RETURN OLD;
END
$$;
COMMENT ON FUNCTION ade_secret_keys_in_use() IS
	'trigger: refuses to delete, rename or replace a data key that still seals a stored value';
CREATE TRIGGER ade_secret_keys_in_use BEFORE DELETE OR UPDATE OF id, wrapped ON ade_secret_keys
	FOR EACH ROW EXECUTE FUNCTION ade_secret_keys_in_use();

-- TRUNCATE too, while any value is sealed
CREATE FUNCTION ade_secret_keys_truncate() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	SELECT sum(u.sealed_values) INTO n FROM @extschema@.ade_secret_key_usage u;
	IF coalesce(n, 0) > 0 THEN
		RAISE EXCEPTION 'the data keys still seal % stored values', n
			USING ERRCODE = 'object_in_use',
				  HINT = 'Delete the keys that seal nothing (see ade_secret_key_usage) instead.';
	END IF;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_secret_keys_truncate() IS
	'trigger: refuses to truncate the data keys while they seal a stored value';
CREATE TRIGGER ade_secret_keys_truncate BEFORE TRUNCATE ON ade_secret_keys
	FOR EACH STATEMENT EXECUTE FUNCTION ade_secret_keys_truncate();

-- The key-encryption key file, made at install (and upgrade), so that a
-- standby made from a later base backup has it (src/vault.c).
CREATE FUNCTION ade_vault_init() RETURNS void
	AS 'MODULE_PATHNAME', 'ade_vault_init' LANGUAGE C VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_vault_init() IS
	'internal: makes the key-encryption key file ade_kek.key in the data directory, if missing';

CREATE FUNCTION ade_oauth_signature(method text, url text, consumer_key text,
	consumer_secret text, token text, token_secret text, "timestamp" bigint, nonce text)
	RETURNS text
	AS 'MODULE_PATHNAME', 'ade_oauth_signature' LANGUAGE C STRICT IMMUTABLE;
COMMENT ON FUNCTION ade_oauth_signature(text, text, text, text, text, text, bigint, text) IS
	'OAuth 1.0a HMAC-SHA1 signature of a request without parameters, as sent to ABM (a pure function, for tests)';

-- A token removed: its devices stay as hosts, their assignments become
-- soft-deleted and keep the token id; its secrets and session go with it.
-- The row of a token being added (src/token.c, ade_add_token()): the same
-- consumer_key renews it in place (same id, cursor kept, flags cleared); a
-- token removed with ade_remove_token() comes back in place: its id, cursor
-- and mode, its settings, profiles and their definitions at Apple, and the
-- devices the removal soft-deleted (those no other token took meanwhile).
-- When one of those devices has lost its host (deleted or re-serialed by
-- hand meanwhile), the cursor is not resumed: a full fetch lists every
-- device again, so that none is left out.
CREATE FUNCTION ade_token_row(p_consumer_key text, p_renew_at timestamptz) RETURNS bigint
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
COMMENT ON FUNCTION ade_token_row(text, timestamptz) IS
	'internal: the abm_tokens row of a token being added: renewed, restored after ade_remove_token(), or new';

-- Removes a token: its secrets and session are deleted, its live devices
-- soft-deleted (a device another token's record of the same second claims
-- goes there), its kept records wait; what adding it back restores is kept
-- in ade_removed_tokens (no secret).
CREATE FUNCTION ade_remove_token(token_id bigint) RETURNS void
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
COMMENT ON FUNCTION ade_remove_token(bigint) IS
	'removes a token: its secrets and session are deleted, its live devices soft-deleted; adding it back restores it in place';

REVOKE ALL ON FUNCTION ade_public_key(), ade_import_key(bytea, bytea), ade_import_key(text, text), ade_rotate_secret_key(),
	ade_secret_keys_in_use(), ade_secret_keys_truncate(), ade_vault_init(),
	ade_add_token(bytea), ade_refresh_account(bigint), ade_remove_token(bigint), ade_token_row(text, timestamptz),
	ade_vault_upgrade(), ade_secret_status(), ade_export_key(), ade_export_tokens(),
	ade_set_assign_profiles(bigint, boolean) FROM PUBLIC;
REVOKE ALL ON ade_secret_key_usage FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ade_secret_status() TO ade_reader;

-- the key-encryption key file exists from the install on (src/vault.c)
SELECT ade_vault_init();
