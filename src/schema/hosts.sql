/*-------------------------------------------------------------------------
 *
 * hosts.sql
 *		Source of the ade install script: the special case of the spec,
 *		hosts that cannot go away while ABM assigns them to us.
 *
 * Owns the triggers that keep a host row for every live assignment: when a
 * host is deleted (any DELETE FROM hosts, one row or ten thousand, or a
 * TRUNCATE) while its host_dep_assignments row is live, the same statement
 * leaves a host row for that serial again, with the same id (references to
 * it stay valid), as if just ingested: model and platform from the last ABM
 * record, created_at now, and the team it had.  Hosts whose assignment is
 * soft-deleted, and hosts that never came from ADE, stay deleted.  A host
 * whose serial is changed by hand keeps its id and its new serial; the
 * device ABM assigns gets a host of its own again, in the same team.  Each
 * host made again is announced with NOTIFY ade_hosts (status.sql), and the
 * id sequence is kept past the highest id of hosts after ids are put back
 * (after TRUNCATE ... RESTART IDENTITY too), so that the next host made
 * never collides.
 *
 * A statement-level AFTER trigger with a transition table does a whole
 * DELETE in one INSERT; a foreign key from the assignments to hosts would
 * make the DELETE fail first, which is why tables.sql has none.  TRUNCATE
 * fires no DELETE trigger and has no transition table: its BEFORE trigger
 * keeps what the AFTER trigger needs in ade_truncated_hosts.
 *
 * Privileges: an application that may write hosts (DELETE, TRUNCATE,
 * UPDATE granted by the admin) may not read the tokens or write the
 * assignments; the trigger functions run as the extension owner (SECURITY
 * DEFINER, search_path pinned) so that the special case holds for it too.
 * Nobody can call them but as triggers of these tables (EXECUTE revoked).
 * The team triggers on hosts live in teams.sql.
 *
 * IDENTIFICATION
 *	  src/schema/hosts.sql
 *
 *-------------------------------------------------------------------------
 */

-- The one lock rule between a sync and the application (src/coexist.c):
-- every write of ade that decides whether a host must stay takes hosts in
-- EXCLUSIVE mode first, queueing 50 ms at a time; the triggers below read
-- the assignments as they are now, which no write of ade can be half-way
-- through while the application's statement holds hosts.
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

-- The next host made by nextval() must not collide with an id in use: a
-- host's, or one an assignment keeps (a soft-deleted assignment keeps the
-- id of a host that is gone, and host_id is its primary key).  Moves the
-- sequence past both when it is behind them: after ids are put back, and
-- after TRUNCATE ... RESTART IDENTITY.
CREATE FUNCTION ade_hosts_id_past() RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_max bigint;
BEGIN
	SELECT greatest((SELECT max(h.id) FROM @extschema@.hosts h),
					(SELECT max(d.host_id) FROM @extschema@.host_dep_assignments d))
	  INTO v_max;
	PERFORM pg_catalog.setval('@extschema@.hosts_id_seq', v_max)
	   FROM @extschema@.hosts_id_seq s
	  WHERE v_max >= CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END;
END
$$;
COMMENT ON FUNCTION ade_hosts_id_past() IS
	'internal: moves the hosts id sequence past every id of hosts and host_dep_assignments';

-- Hosts taken away, made again when their assignment is live: p_ids with,
-- for each, the model, platform and team the host had (null when unknown).
-- Returns how many were made again.
CREATE FUNCTION ade_restore_hosts(p_ids bigint[], p_models text[], p_platforms text[], p_teams bigint[])
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
COMMENT ON FUNCTION ade_restore_hosts(bigint[], text[], text[], bigint[]) IS
	'internal: makes again the given hosts whose ADE assignment is live (same id, data of the last ABM record, same team)';

CREATE FUNCTION ade_hosts_after_delete() RETURNS trigger
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
COMMENT ON FUNCTION ade_hosts_after_delete() IS
	'trigger: re-creates deleted hosts whose ADE assignment is live (same id, data of the last ABM record, same team)';

CREATE TRIGGER ade_keep_live_hosts AFTER DELETE ON hosts
	REFERENCING OLD TABLE AS ade_deleted_hosts
	FOR EACH STATEMENT EXECUTE FUNCTION ade_hosts_after_delete();

-- TRUNCATE fires no DELETE trigger and has no transition table: what the
-- live hosts were is kept just before, and every live-assigned host is made
-- again just after.
CREATE FUNCTION ade_hosts_before_truncate() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- TRUNCATE takes every row, whatever the snapshot; under REPEATABLE
	-- READ or SERIALIZABLE these triggers would read the assignments as of
	-- the transaction's start and miss a device made live since
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION 'TRUNCATE hosts keeps the hosts of live devices only under READ COMMITTED'
			USING ERRCODE = 'feature_not_supported',
				  HINT = 'Run it in a READ COMMITTED transaction, or use DELETE FROM hosts.';
	END IF;
	DELETE FROM @extschema@.ade_truncated_hosts;
	INSERT INTO @extschema@.ade_truncated_hosts (id, hardware_model, platform, team_id)
	SELECT h.id, h.hardware_model, h.platform, h.team_id
	  FROM @extschema@.hosts h
	  JOIN @extschema@.host_dep_assignments d ON d.host_id = h.id AND d.deleted_at IS NULL;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_hosts_before_truncate() IS
	'trigger: before TRUNCATE hosts, keeps what the live-assigned hosts were';

CREATE TRIGGER ade_keep_live_hosts_before_truncate BEFORE TRUNCATE ON hosts
	FOR EACH STATEMENT EXECUTE FUNCTION ade_hosts_before_truncate();

CREATE FUNCTION ade_hosts_after_truncate() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n int;
BEGIN
	WITH kept AS (
		DELETE FROM @extschema@.ade_truncated_hosts RETURNING *
	)
	SELECT @extschema@.ade_restore_hosts(array_agg(d.host_id), array_agg(k.hardware_model),
										 array_agg(k.platform), array_agg(k.team_id))
	  INTO n
	  FROM @extschema@.host_dep_assignments d
	  LEFT JOIN kept k ON k.id = d.host_id
	 WHERE d.deleted_at IS NULL;
	-- after RESTART IDENTITY, even with nothing made again
	PERFORM @extschema@.ade_hosts_id_past();
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION ade_hosts_after_truncate() IS
	'trigger: after TRUNCATE hosts, re-creates the hosts whose ADE assignment is live';

CREATE TRIGGER ade_keep_live_hosts_truncate AFTER TRUNCATE ON hosts
	FOR EACH STATEMENT EXECUTE FUNCTION ade_hosts_after_truncate();

-- A host whose serial is changed by hand (UPDATE hosts SET hardware_serial)
-- keeps its id and new serial; when the old serial's assignment is live and
-- pointed at it, the device gets a host of its own again (a new id, its
-- last ABM record, the same team) and the assignment points at that.
CREATE FUNCTION ade_hosts_reserialed() RETURNS trigger
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
COMMENT ON FUNCTION ade_hosts_reserialed() IS
	'trigger: a live-assigned host whose serial is changed by hand leaves a host for the device ABM assigns';

CREATE TRIGGER ade_keep_live_hosts_reserialed AFTER UPDATE OF hardware_serial ON hosts
	FOR EACH ROW WHEN (OLD.hardware_serial OPERATOR(pg_catalog.<>) NEW.hardware_serial)
	EXECUTE FUNCTION ade_hosts_reserialed();

-- A host whose id is changed by hand (UPDATE hosts SET id): its device
-- follows it (the assignment points at the new id), a soft-deleted device
-- that pointed at the new id gives it up, and the sequence stays past
-- every id in use.
CREATE FUNCTION ade_hosts_renumbered() RETURNS trigger
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
COMMENT ON FUNCTION ade_hosts_renumbered() IS
	'trigger: the device of a host whose id is changed by hand follows it';

-- (named so that it runs before ade_keep_live_hosts_reserialed when an
-- UPDATE changes both)
CREATE TRIGGER ade_keep_live_hosts_renumbered AFTER UPDATE OF id ON hosts
	FOR EACH ROW WHEN (OLD.id OPERATOR(pg_catalog.<>) NEW.id)
	EXECUTE FUNCTION ade_hosts_renumbered();

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

REVOKE ALL ON FUNCTION ade_lock_hosts(), ade_live_hosts(bigint[]), ade_run_latest(text, jsonb),
	ade_hosts_id_past(), ade_restore_hosts(bigint[], text[], text[], bigint[]),
	ade_hosts_after_delete(), ade_hosts_before_truncate(), ade_hosts_after_truncate(),
	ade_hosts_reserialed(), ade_hosts_renumbered(), ade_hosts_id_refused() FROM PUBLIC;
