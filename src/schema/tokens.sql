/*-------------------------------------------------------------------------
 *
 * tokens.sql
 *		Source of the ade install script: the MDM key pair, ABM server
 *		tokens and the secrets that come with them.
 *
 * Owns the SQL side of src/token.c (key pair, token envelope), src/abm.c
 * (GET /account), src/oauth.c (the signature, for tests) and src/vault.c
 * (secrets sealed at rest): their declarations, ade_remove_token(), and
 * ade_secret_key_usage, the keys still in use.
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

CREATE FUNCTION ade_oauth_signature(method text, url text, consumer_key text,
	consumer_secret text, token text, token_secret text, "timestamp" bigint, nonce text)
	RETURNS text
	AS 'MODULE_PATHNAME', 'ade_oauth_signature' LANGUAGE C STRICT IMMUTABLE;
COMMENT ON FUNCTION ade_oauth_signature(text, text, text, text, text, text, bigint, text) IS
	'OAuth 1.0a HMAC-SHA1 signature of a request without parameters, as sent to ABM (a pure function, for tests)';

-- A token removed: its devices stay as hosts, their assignments become
-- soft-deleted and keep the token id; its secrets and session go with it.
CREATE FUNCTION ade_remove_token(token_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_freed text[];
BEGIN
	WITH gone AS (
		UPDATE @extschema@.host_dep_assignments d
		   SET deleted_at = now(), needs_assign = false, updated_at = now()
		 WHERE d.abm_token_id = ade_remove_token.token_id AND d.deleted_at IS NULL
		RETURNING d.hardware_serial)
	SELECT array_agg(g.hardware_serial) INTO v_freed FROM gone g;
	-- its kept and tied records go with it (foreign keys)
	DELETE FROM @extschema@.abm_tokens t WHERE t.id = ade_remove_token.token_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'abm token % does not exist', ade_remove_token.token_id
			USING ERRCODE = 'no_data_found';
	END IF;
	-- a device another token's record of the same second claims goes there
	IF v_freed IS NOT NULL THEN
		PERFORM @extschema@.ade_release_tied(v_freed);
	END IF;
END
$$;
COMMENT ON FUNCTION ade_remove_token(bigint) IS
	'deletes a token with its secrets, session and kept records; its live assignments become soft-deleted';

REVOKE ALL ON FUNCTION ade_public_key(), ade_import_key(bytea, bytea), ade_rotate_secret_key(),
	ade_add_token(bytea), ade_refresh_account(bigint), ade_remove_token(bigint),
	ade_vault_upgrade(), ade_secret_status() FROM PUBLIC;
REVOKE ALL ON ade_secret_key_usage FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ade_secret_status() TO ade_reader;
