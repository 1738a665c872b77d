/*-------------------------------------------------------------------------
 *
 * hosts.sql
 *		Source of the ade install script: the special case of the spec,
 *		hosts that cannot be deleted while ABM assigns them to us.
 *
 * Owns the triggers that keep a host row for every live assignment: when a
 * host is deleted (any DELETE FROM hosts, one row or ten thousand) while its
 * host_dep_assignments row is live, the same statement leaves a host row for
 * that serial again, with the same id (references to it stay valid), as if
 * just ingested: model and platform from the last ABM record, created_at
 * now, in its token's default team.  Hosts whose assignment is soft-deleted,
 * and hosts that never came from ADE, stay deleted.  TRUNCATE fires no
 * DELETE trigger, so it has a trigger of its own.  Each restored host is
 * announced with NOTIFY ade_hosts (status.sql).
 *
 * A statement-level AFTER trigger with a transition table does the whole
 * statement in one INSERT; a foreign key from the assignments to hosts would
 * make the DELETE fail first, which is why tables.sql has none.  The team
 * triggers on hosts live in teams.sql.
 *
 * IDENTIFICATION
 *	  src/schema/hosts.sql
 *
 *-------------------------------------------------------------------------
 */

CREATE FUNCTION ade_hosts_after_delete() RETURNS trigger
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
COMMENT ON FUNCTION ade_hosts_after_truncate() IS
	'trigger: after TRUNCATE hosts, re-creates the hosts whose ADE assignment is live';

CREATE TRIGGER ade_keep_live_hosts_truncate AFTER TRUNCATE ON hosts
	FOR EACH STATEMENT EXECUTE FUNCTION ade_hosts_after_truncate();
