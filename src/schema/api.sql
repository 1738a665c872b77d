/*-------------------------------------------------------------------------
 *
 * api.sql
 *		Source of the ade install script: the Business/School Manager API:
 *		accounts, inventory, AppleCare, activities.
 *
 * Owns the SQL side of src/apijwt.c (the client assertion of an API
 * account: an ES256 JWT signed with its EC P-256 private key): its
 * declaration, for tests.
 *
 * IDENTIFICATION
 *	  src/schema/api.sql
 *
 *-------------------------------------------------------------------------
 */

-- The client assertion of an API account (src/apijwt.c), for tests: a pure
-- function of its arguments but for the signature, which ECDSA draws at
-- random.  The key is the .pem file's bytes.
CREATE FUNCTION ade_client_assertion(client_id text, key_id text, private_key bytea,
	iat bigint, exp bigint, jti text) RETURNS text
	AS 'MODULE_PATHNAME', 'ade_client_assertion' LANGUAGE C STRICT VOLATILE
	SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ade_client_assertion(text, text, bytea, bigint, bigint, text) IS
	'internal: the ES256 client assertion (JWT) of a Business/School Manager API account, signed with its EC P-256 private key (for tests)';
REVOKE ALL ON FUNCTION ade_client_assertion(text, text, bytea, bigint, bigint, text) FROM PUBLIC;
