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
