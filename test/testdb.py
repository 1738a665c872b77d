"""test/testdb.py: the database connections of the randomized tests
(model_test.py, input_fuzz.py): autocommit psycopg2 connections to
ADE_TEST_DB on the PG* server, and one helper that runs a statement.
"""
import os

import psycopg2

DB = os.environ.get("ADE_TEST_DB", "ade_regress")


def connect(user=None):
    """An autocommit connection to the test database, as user (default PGUSER)."""
    conn = psycopg2.connect(dbname=DB, user=user or os.environ.get("PGUSER"),
                            host=os.environ.get("PGHOST"), port=os.environ.get("PGPORT"))
    conn.autocommit = True
    return conn


def q(conn, sql, args=None):
    """Run one statement; its rows, or None when it returns none."""
    with conn.cursor() as c:
        c.execute(sql, args)
        return c.fetchall() if c.description else None
