# ade: Apple Automated Device Enrollment inside PostgreSQL (PGXS)
EXTENSION = ade
EXTVERSION = 0.3

MODULE_big = ade
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
DATA = $(wildcard sql/ade--*.sql)

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(srcdir)/src
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
# every file includes the shared header
$(OBJS): src/ade.h

# the tests run in an existing database that has pg_cron (set after PGXS, which sets it too)
CONTRIB_TESTDB = $(or $(ADE_TEST_DB),ade_regress)

.PHONY: test demo demo-stop bench prove
# One command for everything, from a fresh machine (see README.md)
test:
	test/run-tests.sh

demo:
	test/demo.sh

demo-stop:
	test/demo.sh stop

# measured, not part of the tests (README, Performance)
bench:
	test/bench.sh

# pgTAP files, against a running cluster (test/run-tests.sh sets it up)
prove:
	pg_prove --ext .sql -d $(or $(ADE_TEST_DB),ade_regress) test/t/
