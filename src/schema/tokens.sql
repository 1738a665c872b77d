/*-------------------------------------------------------------------------
 *
 * tokens.sql
 *		Source of the ade install script: the MDM key pair, ABM server
 *		tokens and the secrets that come with them.
 *
 * Owns the SQL side of src/token.c (key pair, token envelope), src/abm.c
 * (GET /account), src/oauth.c (the signature, for tests) and src/vault.c
 * (secrets sealed at rest): their declarations, and ade_remove_token().
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

-- A token removed: its devices stay as hosts, their assignments become
-- soft-deleted and keep the token id; its secrets and session go with it.
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

REVOKE ALL ON FUNCTION ade_public_key(), ade_import_key(text, text), ade_rotate_secret_key(),
	ade_add_token(bytea), ade_refresh_account(bigint), ade_remove_token(bigint) FROM PUBLIC;
