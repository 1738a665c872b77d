/*-------------------------------------------------------------------------
 *
 * uninstall.sql
 *		Source of the ade install script: what a drop may lose.
 *
 * Owns the event trigger ade_drop_guard (src/uninstall.c): DROP EXTENSION
 * ade, a DROP SCHEMA ... CASCADE of its schema or a DROP OWNED BY its owner
 * is refused while ade holds tokens, the key pair or hosts, with what would
 * be lost and how to back it up (ade_export_key(), ade_export_tokens(),
 * tokens.sql), unless ade.allow_drop is on; a drop that goes ahead removes
 * the pg_cron job ade_sync with it.  The trigger belongs to the extension,
 * so no dump carries it and nothing of it outlives the extension.
 *
 * IDENTIFICATION
 *	  src/schema/uninstall.sql
 *
 *-------------------------------------------------------------------------
 */

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
