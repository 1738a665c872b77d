-- Hostile look-alikes made BEFORE the extension is installed or upgraded
-- (issue 13, item 2): a role with CREATE on the extension's schema can make
-- functions, aggregates and operators that match a call better than the
-- built-in ones.  No object of the extension may bind to them: a view or
-- SQL function that did would run the role's code as every reader.  The
-- check is general (pg_depend: no member object depends on a function,
-- operator or type outside pg_catalog that is not the extension's own),
-- and the views and functions readers use are run with the look-alikes in
-- place: any call to one raises.
\ir setup.psql
-- all in one transaction, rolled back at the end: nothing is left behind
BEGIN;
DROP EXTENSION ade CASCADE;
SELECT plan(6);
CREATE FUNCTION public.ade_hostile() RETURNS void LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'a hostile look-alike ran'; END $$;
CREATE FUNCTION public.hostile_cnt(bigint, bigint) RETURNS bigint LANGUAGE plpgsql AS $$ BEGIN PERFORM public.ade_hostile(); RETURN 0; END $$;
CREATE FUNCTION public.hostile_arr(text[], text) RETURNS text[] LANGUAGE plpgsql AS $$ BEGIN PERFORM public.ade_hostile(); RETURN $1; END $$;
CREATE FUNCTION public.hostile_obj(jsonb, text, jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$ BEGIN PERFORM public.ade_hostile(); RETURN $1; END $$;
-- aggregates that match better than the built-in ones (which take "any" or anyelement)
CREATE FUNCTION public.hostile_obj(jsonb, text, bigint) RETURNS jsonb LANGUAGE plpgsql AS $$ BEGIN PERFORM public.ade_hostile(); RETURN $1; END $$;
CREATE AGGREGATE public.jsonb_object_agg(text, jsonb) (SFUNC = public.hostile_obj, STYPE = jsonb, INITCOND = '{}');
CREATE AGGREGATE public.jsonb_object_agg(text, bigint) (SFUNC = public.hostile_obj, STYPE = jsonb, INITCOND = '{}');
CREATE AGGREGATE public.count(bigint) (SFUNC = public.hostile_cnt, STYPE = bigint, INITCOND = '0');
CREATE AGGREGATE public.array_agg(text) (SFUNC = public.hostile_arr, STYPE = text[], INITCOND = '{}');
-- functions that match better than variadic or polymorphic built-ins
CREATE FUNCTION public.format(text, text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN PERFORM public.ade_hostile(); RETURN $1; END $$;
CREATE FUNCTION public.format(text, bigint) RETURNS text LANGUAGE plpgsql AS $$ BEGIN PERFORM public.ade_hostile(); RETURN $1; END $$;
CREATE FUNCTION public.concat_ws(text, text, text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN PERFORM public.ade_hostile(); RETURN $1; END $$;
CREATE FUNCTION public.coalesce(text, text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN PERFORM public.ade_hostile(); RETURN $1; END $$;
CREATE FUNCTION public.jsonb_build_object(text, text) RETURNS jsonb LANGUAGE plpgsql AS $$ BEGIN PERFORM public.ade_hostile(); RETURN NULL; END $$;
CREATE FUNCTION public.jsonb_build_object(text, bigint) RETURNS jsonb LANGUAGE plpgsql AS $$ BEGIN PERFORM public.ade_hostile(); RETURN NULL; END $$;
CREATE FUNCTION public.greatest(timestamptz, timestamptz) RETURNS timestamptz LANGUAGE plpgsql AS $$ BEGIN PERFORM public.ade_hostile(); RETURN $1; END $$;
CREATE FUNCTION public.hostile_eq(text, name) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN PERFORM public.ade_hostile(); RETURN false; END $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = name, FUNCTION = public.hostile_eq);
CREATE FUNCTION public.hostile_gt(bigint, integer) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN PERFORM public.ade_hostile(); RETURN false; END $$;
CREATE OPERATOR public.> (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = public.hostile_gt);

-- what binds to an object outside pg_catalog that is not the extension's
CREATE FUNCTION pg_temp.foreign_bindings() RETURNS SETOF text LANGUAGE sql AS $$
  SELECT DISTINCT pg_describe_object(m.classid, m.objid, m.objsubid) || ' -> ' || pg_describe_object(d.refclassid, d.refobjid, 0)
    FROM pg_depend m
    JOIN pg_depend d ON (d.classid, d.objid) = (m.classid, m.objid)
                     OR (d.classid = 'pg_rewrite'::regclass
                         AND d.objid IN (SELECT r.oid FROM pg_rewrite r WHERE m.classid = 'pg_class'::regclass AND r.ev_class = m.objid))
   WHERE m.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ade') AND m.deptype = 'e'
     AND d.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass, 'pg_type'::regclass, 'pg_aggregate'::regclass)
     AND d.refobjid >= 16384	-- not built in
     AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = d.refclassid AND e.objid = d.refobjid AND e.deptype = 'e'
                       AND e.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ade'))
     AND NOT EXISTS (SELECT 1 FROM pg_type t WHERE d.refclassid = 'pg_type'::regclass AND t.oid = d.refobjid
                       AND t.typrelid IN (SELECT e.objid FROM pg_depend e WHERE e.classid = 'pg_class'::regclass AND e.deptype = 'e'
                                            AND e.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ade')))
$$;

SET search_path = public;
CREATE EXTENSION ade;
SELECT is((SELECT pg_catalog.array_agg(b ORDER BY b) FROM pg_temp.foreign_bindings() b), NULL,
  'installed with look-alikes in its schema, no object of the extension binds to one');
SELECT lives_ok('SELECT * FROM ade_status; SELECT * FROM ade_team_status', 'ade_status and ade_team_status run without calling one');
CREATE ROLE ade_test_hreader IN ROLE ade_reader;
SET ROLE ade_test_hreader;
SELECT lives_ok('SELECT * FROM ade_status; SELECT * FROM ade_team_status; SELECT * FROM ade_last_runs(5)',
  'nor as ade_reader');
RESET ROLE;

-- the same through the upgrade path, from the first release
DROP EXTENSION ade CASCADE;
CREATE EXTENSION ade VERSION '0.1';
ALTER EXTENSION ade UPDATE;
SELECT is((SELECT pg_catalog.array_agg(b ORDER BY b) FROM pg_temp.foreign_bindings() b), NULL,
  'upgraded from 0.1 with look-alikes in its schema, no object of the extension binds to one');
SET ROLE ade_test_hreader;
SELECT lives_ok('SELECT * FROM ade_status; SELECT * FROM ade_team_status', 'and the views run without calling one, as ade_reader');
RESET ROLE;
-- the check itself sees a binding: a view of ours made to use a look-alike
CREATE VIEW ade_probe AS SELECT public.format('%s'::text, 'x'::text) AS v;
ALTER EXTENSION ade ADD VIEW ade_probe;
SELECT ok((SELECT count(*) FROM pg_temp.foreign_bindings() b WHERE b LIKE 'view ade_probe -> function format(text,text)%') = 1,
  'the check finds a member that binds to a look-alike');
SELECT * FROM finish();
ROLLBACK;
