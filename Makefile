# ade: Apple Automated Device Enrollment (ABM/ADE) inside PostgreSQL (PGXS)
EXTENSION = ade
# the version is ade.control's default_version; the library and the install
# script are built for it
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)
ifeq ($(EXTVERSION),)
$(error no default_version in $(EXTENSION).control)
endif

MODULE_big = ade
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

# The install script of the version in development is built from the SQL
# sources by concern, in this order (each names what it owns in its header);
# the released install script (0.1) and the upgrade scripts are hand-written
# and never edited once released.
SCHEMA = src/schema/tables.sql src/schema/tokens.sql src/schema/sync.sql \
	src/schema/hosts.sql src/schema/profiles.sql src/schema/teams.sql \
	src/schema/devices.sql src/schema/api.sql \
	src/schema/status.sql src/schema/schedule.sql \
	src/schema/uninstall.sql
# a file of src/schema that is not listed would silently never ship
ifneq ($(filter-out $(SCHEMA),$(wildcard src/schema/*.sql)),)
$(error src/schema has files the Makefile does not list in SCHEMA: $(filter-out $(SCHEMA),$(wildcard src/schema/*.sql)))
endif
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
# the released install script and the upgrade scripts (never an old build)
DATA = sql/$(EXTENSION)--0.1.sql $(wildcard sql/$(EXTENSION)--*--*.sql)

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(srcdir)/src -DADE_VERSION=\"$(EXTVERSION)\"
# -Wno-unused-parameter: the server headers (ilist.h, bufpage.h) and PG_FUNCTION_ARGS trip it
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter
SHLIB_LINK = -lcurl -lcrypto

# pg_regress tests: sql/<name>.sql + expected/<name>.out (beside the install script)
REGRESS = install settings oauth_signature token_fixture token_end_to_end \
	token_bad_input abm_session http_safety
REGRESS_OPTS = --inputdir=. --use-existing

# `make test` must start on a machine without PostgreSQL's headers: it installs them
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
endif
# every file includes the shared header; the version is compiled in
$(OBJS): src/ade.h $(EXTENSION).control

# the install script: the sources, in order, behind the guard every script has
$(DATA_built): $(SCHEMA) $(EXTENSION).control Makefile
	{ printf '%s\n' "-- $(notdir $@): built by make from $(SCHEMA); edit those, not this file" \
		'-- complain if script is sourced in psql, rather than via CREATE EXTENSION' \
		'\echo Use "CREATE EXTENSION $(EXTENSION)" to load this file. \quit' ''; \
	  cat $(SCHEMA); } > $@

# the tests run in an existing database that has pg_cron (set after PGXS, which sets it too)
CONTRIB_TESTDB = $(or $(ADE_TEST_DB),ade_regress)

.PHONY: test demo demo-stop bench prove fuzz
# One command for everything, from a fresh machine (see README.md)
test:
	test/run-tests.sh

demo:
	test/demo.sh

demo-stop:
	test/demo.sh stop

# the randomized tests, long (ADE_FUZZ_MINUTES, default 30; ADE_FUZZ_SEED replays)
fuzz:
	test/fuzz.sh

# measured, not part of the tests (README, Performance)
bench:
	test/bench.sh

# pgTAP files, against a running cluster (test/run-tests.sh sets it up)
prove:
	pg_prove --ext .sql -d $(or $(ADE_TEST_DB),ade_regress) test/t/
