-- test/describe_extension.sql: everything the installed extension ade
-- consists of, as sorted text lines without OIDs, so that two databases can
-- be compared with diff (test/upgrade_equals_install.sh compares a fresh
-- CREATE EXTENSION with 0.1 followed by ALTER EXTENSION UPDATE, each in a
-- new database of a new cluster).
--
-- Lines are "<object> | <aspect> | <value>" in a fixed order; a value may
-- span lines (function and view definitions).  Privileges are compared as
-- sets of (grantee, privilege, grantable) with a NULL ACL taken as its
-- default, so that "REVOKE ... FROM PUBLIC" on a table that never had a
-- PUBLIC grant compares equal however it was written.
--
-- Covered:
-- - every object in the extension's schema, member or not (a leftover that
--   an upgrade forgot to drop, or dropped from the extension, shows);
-- - functions: their whole pg_get_functiondef (arguments, defaults, result,
--   language, volatility, strictness, security, leakproof, parallel, cost,
--   rows, SET options, body), kind, owner, grants; aggregates by their
--   pg_aggregate entry;
-- - tables, views, sequences, indexes: kind, persistence, options (TOAST's
--   too), row security, replica identity, owner, grants, columns in order
--   (name, type, not null, default, identity, generated, collation,
--   statistics target, storage, compression, options, grants, comment),
--   constraints, indexes (and which one is clustered), triggers, rules
--   (enabled or not), policies, view definitions, sequence parameters,
--   extended statistics;
-- - types (composite fields, domain base, default and checks, enum labels,
--   owner), operators, casts;
-- - comments on every object, column, constraint, trigger, rule, index and
--   policy;
-- - the extension's configuration tables (pg_extension_config_dump) with
--   their conditions, version, schema and relocatability;
-- - the schema's own owner and grants, default privileges, publications,
--   event triggers;
-- - the roles that anything here grants to, with their attributes, settings
--   and memberships.
\set QUIET 1
\set ON_ERROR_STOP 1
\pset format unaligned
\pset tuples_only on
\pset pager off
SET search_path = pg_catalog;

WITH ext AS (
	SELECT e.oid, e.extnamespace AS nsp FROM pg_extension e WHERE e.extname = 'ade'
), members AS (
	SELECT d.classid, d.objid
	  FROM pg_depend d, ext
	 WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
), objs AS (
	-- every object of the schema, and every member wherever it is
	-- (indexes are their table's: described with it)
	SELECT 'pg_class'::regclass AS classid, c.oid AS objid FROM pg_class c, ext
	 WHERE c.relnamespace = ext.nsp AND c.relkind NOT IN ('i', 'I')
	UNION
	SELECT 'pg_proc'::regclass, p.oid FROM pg_proc p, ext WHERE p.pronamespace = ext.nsp
	UNION
	SELECT 'pg_type'::regclass, t.oid FROM pg_type t, ext
	 WHERE t.typnamespace = ext.nsp AND t.typtype <> 'b' AND t.typrelid = 0	-- not a table's row type
	UNION
	SELECT 'pg_operator'::regclass, o.oid FROM pg_operator o, ext WHERE o.oprnamespace = ext.nsp
	UNION
	SELECT 'pg_statistic_ext'::regclass, s.oid FROM pg_statistic_ext s, ext WHERE s.stxnamespace = ext.nsp
	UNION
	SELECT 'pg_collation'::regclass, c.oid FROM pg_collation c, ext WHERE c.collnamespace = ext.nsp
	UNION
	SELECT 'pg_conversion'::regclass, c.oid FROM pg_conversion c, ext WHERE c.connamespace = ext.nsp
	UNION
	SELECT m.classid, m.objid FROM members m
), rels AS (
	SELECT c.oid, c.relkind FROM pg_class c JOIN objs o ON o.classid = 'pg_class'::regclass AND o.objid = c.oid
	 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
), procs AS (
	SELECT p.oid FROM pg_proc p JOIN objs o ON o.classid = 'pg_proc'::regclass AND o.objid = p.oid
), lines(obj, aspect, val) AS (
	-- the extension itself
	SELECT 'extension ade', 'version, schema, relocatable',
		   concat_ws(', ', e.extversion, e.extnamespace::regnamespace::text, e.extrelocatable)
	  FROM pg_extension e WHERE e.extname = 'ade'
	UNION ALL
	SELECT 'extension ade', 'configuration table',
		   x.tab::regclass::text || ' where ' || coalesce(nullif(x.cond, ''), '(all rows)')
	  FROM pg_extension e,
		   LATERAL unnest(e.extconfig, coalesce(e.extcondition, array_fill(''::text, ARRAY[cardinality(e.extconfig)])))
		   AS x(tab, cond)
	 WHERE e.extname = 'ade'
	UNION ALL
	-- the schema: owner, grants, comment
	SELECT 'schema ' || n.nspname, 'owner, grants, comment',
		   concat_ws(', ', n.nspowner::regrole::text,
					 (SELECT string_agg(format('%s:%s%s', CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
											   a.privilege_type, CASE WHEN a.is_grantable THEN '*' ELSE '' END), ' ' ORDER BY 1)
						FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a),
					 coalesce(quote_literal(obj_description(n.oid, 'pg_namespace')), 'none'))
	  FROM pg_namespace n, ext WHERE n.oid = ext.nsp
	UNION ALL
	SELECT 'default privileges', coalesce(d.defaclnamespace::regnamespace::text, '(all schemas)') || ' ' || d.defaclobjtype::text,
		   d.defaclrole::regrole::text || ': ' || d.defaclacl::text
	  FROM pg_default_acl d
	UNION ALL
	SELECT 'publication ' || p.pubname, 'definition',
		   concat_ws(' ', p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate,
					 (SELECT string_agg(x.schemaname || '.' || x.tablename, ',' ORDER BY 1)
						FROM pg_publication_tables x WHERE x.pubname = p.pubname))
	  FROM pg_publication p
	UNION ALL
	SELECT 'event trigger ' || et.evtname, 'definition',
		   concat_ws(' ', et.evtevent, et.evtfoid::regprocedure::text, et.evtenabled::text, et.evttags::text,
					 coalesce(quote_literal(obj_description(et.oid, 'pg_event_trigger')), 'none'))
	  FROM pg_event_trigger et
	UNION ALL
	-- every object, and whether it belongs to the extension
	SELECT pg_describe_object(o.classid, o.objid, 0), 'member',
		   CASE WHEN EXISTS (SELECT 1 FROM members m WHERE m.classid = o.classid AND m.objid = o.objid)
				THEN 'yes' ELSE 'NO' END
	  FROM objs o
	UNION ALL
	-- comments on every object
	SELECT pg_describe_object(o.classid, o.objid, 0), 'comment',
		   coalesce(quote_literal(obj_description(o.objid, o.classid::regclass::name)), 'none')
	  FROM objs o
	UNION ALL
	-- functions
	SELECT pg_describe_object('pg_proc'::regclass, p.oid, 0), 'definition', pg_get_functiondef(p.oid)
	  FROM procs x JOIN pg_proc p ON p.oid = x.oid WHERE p.prokind <> 'a'
	UNION ALL
	SELECT pg_describe_object('pg_proc'::regclass, p.oid, 0), 'aggregate',
		   concat_ws(' ', a.aggkind::text, a.aggtransfn::regproc::text, a.aggfinalfn::regproc::text,
					 a.aggcombinefn::regproc::text, a.aggtranstype::regtype::text, a.agginitval,
					 a.aggsortop::regoperator::text, pg_get_function_arguments(p.oid))
	  FROM procs x JOIN pg_proc p ON p.oid = x.oid JOIN pg_aggregate a ON a.aggfnoid = p.oid
	UNION ALL
	SELECT pg_describe_object('pg_proc'::regclass, p.oid, 0), 'kind, owner', p.prokind::text || ', ' || p.proowner::regrole::text
	  FROM procs x JOIN pg_proc p ON p.oid = x.oid
	UNION ALL
	SELECT pg_describe_object('pg_proc'::regclass, p.oid, 0), 'grants',
		   (SELECT string_agg(format('%s:%s%s', CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
									 a.privilege_type, CASE WHEN a.is_grantable THEN '*' ELSE '' END), ' ' ORDER BY 1)
			  FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a)
	  FROM procs x JOIN pg_proc p ON p.oid = x.oid
	UNION ALL
	-- relations
	SELECT pg_describe_object('pg_class'::regclass, c.oid, 0), 'persistence, options, row security, replica identity, owner',
		   concat_ws(', ', c.relpersistence::text, coalesce(c.reloptions::text, '{}'),
					 'toast ' || coalesce((SELECT t.reloptions::text FROM pg_class t WHERE t.oid = c.reltoastrelid), '{}'),
					 c.relrowsecurity, c.relforcerowsecurity, c.relreplident::text,
					 c.relowner::regrole::text)
	  FROM rels r JOIN pg_class c ON c.oid = r.oid
	UNION ALL
	SELECT pg_describe_object('pg_class'::regclass, c.oid, 0), 'grants',
		   (SELECT string_agg(format('%s:%s%s', CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
									 a.privilege_type, CASE WHEN a.is_grantable THEN '*' ELSE '' END), ' ' ORDER BY 1)
			  FROM aclexplode(coalesce(c.relacl, acldefault((CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char", c.relowner))) a)
	  FROM rels r JOIN pg_class c ON c.oid = r.oid
	UNION ALL
	SELECT pg_describe_object('pg_class'::regclass, c.oid, 0),
		   format('column %s', to_char(row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), 'FM000')),
		   concat_ws(' ', quote_ident(a.attname), format_type(a.atttypid, a.atttypmod),
					 CASE WHEN a.attnotnull THEN 'not null' END,
					 'default ' || pg_get_expr(ad.adbin, ad.adrelid),
					 CASE a.attidentity WHEN 'a' THEN 'generated always as identity'
										WHEN 'd' THEN 'generated by default as identity' END,
					 CASE WHEN a.attgenerated = 's' THEN 'generated stored' END,
					 CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
						  THEN 'collate ' || a.attcollation::regcollation::text END,
					 CASE WHEN a.attstattarget >= 0 THEN 'statistics ' || a.attstattarget END,
					 CASE WHEN a.attstorage <> t.typstorage THEN 'storage ' || a.attstorage::text END,
					 CASE WHEN a.attcompression <> '' THEN 'compression ' || a.attcompression::text END,
					 -- (this server's own pg_attver option says when a column was made)
					 'options ' || (SELECT array_agg(o ORDER BY o)::text FROM unnest(a.attoptions) o
									 WHERE o NOT LIKE 'pg\_attver=%'),
					 'grants ' || a.attacl::text,
					 'comment ' || quote_literal(col_description(c.oid, a.attnum)))
	  FROM rels r JOIN pg_class c ON c.oid = r.oid
	  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	  JOIN pg_type t ON t.oid = a.atttypid
	  LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
	 WHERE r.relkind <> 'S'
	UNION ALL
	SELECT pg_describe_object('pg_class'::regclass, c.oid, 0), 'dropped columns',
		   count(*)::text
	  FROM rels r JOIN pg_class c ON c.oid = r.oid
	  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND a.attisdropped
	 GROUP BY c.oid
	UNION ALL
	SELECT pg_describe_object('pg_class'::regclass, con.conrelid, 0), 'constraint ' || con.conname,
		   pg_get_constraintdef(con.oid) || ' comment ' ||
		   coalesce(quote_literal(obj_description(con.oid, 'pg_constraint')), 'none')
	  FROM rels r JOIN pg_constraint con ON con.conrelid = r.oid
	UNION ALL
	SELECT pg_describe_object('pg_class'::regclass, i.indrelid, 0), 'index ' || ic.relname,
		   concat_ws(' ', pg_get_indexdef(i.indexrelid),
					 CASE WHEN i.indisclustered THEN 'clustered' END,
					 CASE WHEN i.indisreplident THEN 'replica identity' END,
					 'options ' || coalesce(ic.reloptions::text, '{}'),
					 'comment ' || coalesce(quote_literal(obj_description(i.indexrelid, 'pg_class')), 'none'))
	  FROM rels r JOIN pg_index i ON i.indrelid = r.oid JOIN pg_class ic ON ic.oid = i.indexrelid
	UNION ALL
	SELECT pg_describe_object('pg_class'::regclass, tg.tgrelid, 0), 'trigger ' || tg.tgname,
		   pg_get_triggerdef(tg.oid) || ' enabled ' || tg.tgenabled::text || ' comment ' ||
		   coalesce(quote_literal(obj_description(tg.oid, 'pg_trigger')), 'none')
	  FROM rels r JOIN pg_trigger tg ON tg.tgrelid = r.oid AND NOT tg.tgisinternal
	UNION ALL
	SELECT pg_describe_object('pg_class'::regclass, pol.polrelid, 0), 'policy ' || pol.polname,
		   concat_ws(' ', pol.polcmd::text, pol.polpermissive, pol.polroles::regrole[]::text,
					 pg_get_expr(pol.polqual, pol.polrelid), pg_get_expr(pol.polwithcheck, pol.polrelid),
					 'comment ' || coalesce(quote_literal(obj_description(pol.oid, 'pg_policy')), 'none'))
	  FROM rels r JOIN pg_policy pol ON pol.polrelid = r.oid
	UNION ALL
	SELECT pg_describe_object('pg_class'::regclass, rw.ev_class, 0), 'rule ' || rw.rulename,
		   CASE WHEN rw.rulename = '_RETURN' THEN pg_get_viewdef(rw.ev_class, true) ELSE pg_get_ruledef(rw.oid, true) END
		   || ' enabled ' || rw.ev_enabled::text || ' comment ' ||
		   coalesce(quote_literal(obj_description(rw.oid, 'pg_rewrite')), 'none')
	  FROM rels r JOIN pg_rewrite rw ON rw.ev_class = r.oid
	UNION ALL
	SELECT pg_describe_object('pg_class'::regclass, s.seqrelid, 0), 'sequence',
		   concat_ws(' ', format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
					 s.seqcache, s.seqcycle, 'owned by ' ||
					 (SELECT d.refobjid::regclass::text || '.' || quote_ident(a.attname)
						FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
					   WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
						 AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
	  FROM rels r JOIN pg_sequence s ON s.seqrelid = r.oid
	UNION ALL
	SELECT pg_describe_object('pg_statistic_ext'::regclass, s.oid, 0), 'definition',
		   pg_get_statisticsobjdef(s.oid) || ' target ' || s.stxstattarget || ' owner ' || s.stxowner::regrole::text
	  FROM pg_statistic_ext s JOIN objs o ON o.classid = 'pg_statistic_ext'::regclass AND o.objid = s.oid
	UNION ALL
	-- types: composite fields, domains, enums, owners
	SELECT pg_describe_object('pg_type'::regclass, t.oid, 0), 'definition',
		   concat_ws(' ', t.typtype::text, 'owner ' || t.typowner::regrole::text,
					 'grants ' || t.typacl::text,
					 (SELECT string_agg(quote_literal(en.enumlabel), ',' ORDER BY en.enumsortorder) FROM pg_enum en WHERE en.enumtypid = t.oid),
					 CASE WHEN t.typtype = 'd' THEN 'base ' || format_type(t.typbasetype, t.typtypmod) END,
					 CASE WHEN t.typnotnull THEN 'not null' END,
					 'default ' || t.typdefault,
					 (SELECT string_agg(con.conname || ' ' || pg_get_constraintdef(con.oid), ', ' ORDER BY con.conname)
						FROM pg_constraint con WHERE con.contypid = t.oid),
					 (SELECT 'fields ' || string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
						FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped),
					 CASE WHEN t.typtype = 'r' THEN (SELECT r.rngsubtype::regtype::text FROM pg_range r WHERE r.rngtypid = t.oid) END)
	  FROM pg_type t JOIN objs o ON o.classid = 'pg_type'::regclass AND o.objid = t.oid
	UNION ALL
	-- operators and casts
	SELECT pg_describe_object('pg_operator'::regclass, op.oid, 0), 'definition',
		   concat_ws(' ', op.oprkind::text, op.oprcode::regproc::text, op.oprleft::regtype::text, op.oprright::regtype::text,
					 op.oprresult::regtype::text, op.oprcom::regoperator::text, op.oprnegate::regoperator::text,
					 op.oprrest::regproc::text, op.oprjoin::regproc::text, op.oprcanmerge, op.oprcanhash,
					 'owner ' || op.oprowner::regrole::text)
	  FROM pg_operator op JOIN objs o ON o.classid = 'pg_operator'::regclass AND o.objid = op.oid
	UNION ALL
	SELECT pg_describe_object('pg_cast'::regclass, ca.oid, 0), 'definition',
		   concat_ws(' ', ca.castfunc::regprocedure::text, ca.castcontext::text, ca.castmethod::text)
	  FROM pg_cast ca JOIN members m ON m.classid = 'pg_cast'::regclass AND m.objid = ca.oid
	UNION ALL
	-- roles that anything here grants to
	SELECT 'role ' || ro.rolname, 'attributes',
		   concat_ws(' ', 'super ' || ro.rolsuper, 'inherit ' || ro.rolinherit, 'createrole ' || ro.rolcreaterole,
					 'createdb ' || ro.rolcreatedb, 'login ' || ro.rolcanlogin, 'replication ' || ro.rolreplication,
					 'bypassrls ' || ro.rolbypassrls, 'connlimit ' || ro.rolconnlimit,
					 'valid until ' || ro.rolvaliduntil, 'settings ' || ro.rolconfig::text,
					 'member of ' || (SELECT string_agg(g.roleid::regrole::text, ',' ORDER BY 1)
										FROM pg_auth_members g WHERE g.member = ro.oid),
					 'members ' || (SELECT string_agg(g.member::regrole::text, ',' ORDER BY 1)
									  FROM pg_auth_members g WHERE g.roleid = ro.oid),
					 'comment ' || coalesce(quote_literal(shobj_description(ro.oid, 'pg_authid')), 'none'))
	  FROM pg_roles ro
	 WHERE ro.rolname <> current_user
	   AND ro.rolname !~ '^pg_'
	   AND ro.oid IN (
		SELECT a.grantee FROM rels r JOIN pg_class c ON c.oid = r.oid, LATERAL aclexplode(c.relacl) a
		UNION
		SELECT a.grantee FROM procs x JOIN pg_proc p ON p.oid = x.oid, LATERAL aclexplode(p.proacl) a
		UNION
		SELECT a.grantee FROM pg_namespace n, ext, LATERAL aclexplode(n.nspacl) a WHERE n.oid = ext.nsp
		UNION
		SELECT a.grantee FROM pg_attribute at JOIN rels r ON r.oid = at.attrelid, LATERAL aclexplode(at.attacl) a
		UNION
		SELECT r.oid FROM pg_roles r WHERE r.rolname LIKE 'ade%')
)
SELECT obj || ' | ' || aspect || ' | ' || coalesce(val, '(null)')
  FROM lines
 ORDER BY obj, aspect, val;
