/*-------------------------------------------------------------------------
 *
 * ade--0.3--0.4.sql
 *		Upgrade of the ade extension from 0.3 to 0.4 (in development).
 *
 * 0.4 is the first version whose install script is built from the SQL
 * sources by concern (the files of src/schema/); this script brings a 0.3
 * installation to exactly what a fresh install of 0.4 creates, which the
 * test test/t/06_install_equals_upgrade.sql proves.  Every schema change of
 * 0.4 goes into the sources and into this script.
 *
 * Never edit this file once released.
 *
 *-------------------------------------------------------------------------
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION ade UPDATE TO '0.4'" to load this file. \quit
