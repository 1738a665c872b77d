/*-------------------------------------------------------------------------
 *
 * ade.c
 *		Module entry of the ade extension: _PG_init, the settings, and the
 *		rule of which ABM URLs may be used.
 *
 * Owns: every ade.* setting (defined here, in the same order as the README's
 * settings table), the check of ade.abm_url, and the lookup of the schema the
 * extension was installed in.  It does not talk to ABM (abm.c, http.c) nor
 * touch tables (sync.c, token.c).
 *
 * ade.abm_url is checked when it is set and again before every request
 * (AdeAbmBaseUrl).  A value set before the library was loaded and rejected
 * while loading is remembered, and every request refuses to run until a
 * valid value is set: it must never fall back silently to Apple's URL.
 *
 * The README has every server preload the library (shared_preload_libraries):
 * only then does it register the WAL resource manager of kekwal.c, which a
 * standby needs to replay; ade_preloaded() tells ade_node_problem() (the
 * status) whether this server did.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/ade.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>

#include "ade.h"
#include "access/genam.h"
#include "access/xlog.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "utils/fmgroids.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/builtins.h"

PG_MODULE_MAGIC;

/* ---- GUC variables ---- */
char	   *ade_abm_url = NULL;
char	   *ade_enroll_url = NULL;
int			ade_http_timeout = 30000;
int			ade_connect_timeout = 10000;
int			ade_page_size = 1000;
int			ade_max_sync_seconds = 45;
int			ade_failed_retry_interval = 3600;
int			ade_max_response_bytes = 64 * 1024 * 1024;
char	   *ade_ca_file = NULL;
int			ade_runs_retention = 7 * 24 * 60;
char	   *ade_proxy = NULL;
int			ade_max_retries = 3;
int			ade_retry_backoff = 500;
int			ade_max_retry_wait = 10;
int			ade_max_concurrent_requests = 32;
int			ade_reconcile_interval = 1440;
bool		ade_replicate_key = false;
int			ade_min_refetch_interval = 60;
char	   *ade_abm_api_url = NULL;
char	   *ade_abm_token_url = NULL;
int			ade_inventory_interval = 60;
int			ade_applecare_per_run = 10;
bool		ade_allow_drop = false;

/* a value of ade.abm_url that was rejected while the library loaded */
static char *rejected_abm_url = NULL;

void		_PG_init(void);

/*
 * Is the URL, as written, absolute: "scheme://host..." with a host name or
 * address (libcurl fixes "https:/host" and "https:///x" up, but a profile
 * keeps the string as typed), no user or password in it, and not port 0?
 */
static bool
absolute_url(const char *url, CURLU *u, const char *host, char **why)
{
	/* the "://" right after the scheme, not one later in the URL */
	const char *p = url + strspn(url, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
	const char *h;
	char	   *port;
	bool		alnum = false;

	if (p == url || strncmp(p, "://", 3) != 0 || p[3] == '/' || p[3] == '\0')
	{
		*why = "it is not an absolute URL (scheme://host/...)";
		return false;
	}
	h = p + 3;
	if (strcspn(h, "@") < strcspn(h, "/?#"))
	{
		*why = "it holds a user or password";
		return false;
	}
	if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK)
	{
		bool		zero = strcmp(port, "0") == 0;

		curl_free(port);
		if (zero)
		{
			*why = "port 0 is not one";
			return false;
		}
	}
	if (host[0] == '[')
		return true;			/* an IPv6 address: curl checked it */
	if (host[0] == '-' || host[0] == '.' || strstr(host, "..") != NULL)
	{
		*why = "its host name is not one";
		return false;
	}
	for (h = host; *h; h++)
	{
		if (isalnum((unsigned char) *h))
			alnum = true;
		else if (*h != '-' && *h != '.' && *h != '_')
		{
			*why = "its host name is not one";
			return false;
		}
	}
	if (!alnum)
		*why = "its host name is not one";
	return alnum;
}

/*
 * Is this URL one ade may call?  https anywhere (the peer is always
 * verified); plain http only to a loopback host.  On refusal, *why says why.
 */
bool
AdeUrlAllowed(const char *url, char **why)
{
	CURLU	   *u;
	char	   *scheme = NULL;
	char	   *host = NULL;
	bool		ok = false;

	*why = NULL;
	if (url == NULL || url[0] == '\0')
	{
		*why = "it is empty";
		return false;
	}
	u = curl_url();
	if (u == NULL)
	{
		*why = "out of memory";
		return false;
	}
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
		*why = "it is not a valid URL";
	else if (!absolute_url(url, u, host, why))
		;						/* *why says what */
	else if (pg_strcasecmp(scheme, "https") == 0)
		ok = true;
	else if (pg_strcasecmp(scheme, "http") != 0)
		*why = "only https (and http to a loopback host) are allowed";
	else
	{
		struct in_addr a4;
		struct in6_addr a6;
		char		h[256];
		size_t		n = strlen(host);

		/* curl gives IPv6 hosts in brackets */
		if (n >= 2 && n < sizeof(h) && host[0] == '[' && host[n - 1] == ']')
		{
			memcpy(h, host + 1, n - 2);
			h[n - 2] = '\0';
		}
		else
			strlcpy(h, host, sizeof(h));

		if (pg_strcasecmp(h, "localhost") == 0)
			ok = true;
		else if (inet_pton(AF_INET, h, &a4) == 1)
			ok = ((ntohl(a4.s_addr) >> 24) == 127);
		else if (inet_pton(AF_INET6, h, &a6) == 1)
			ok = IN6_IS_ADDR_LOOPBACK(&a6);
		if (!ok)
			*why = "plain http is allowed only to a loopback host (127.0.0.0/8, ::1, localhost)";
	}
	if (scheme)
		curl_free(scheme);
	if (host)
		curl_free(host);
	curl_url_cleanup(u);
	return ok;
}

/*
 * ade_url_refusal(url text) returns text: why ade would not call this URL
 * (the rule of AdeUrlAllowed), or NULL when it would.  The profile checks
 * (profiles.sql) use it for a profile's url, as ade.enroll_url does.
 */
PG_FUNCTION_INFO_V1(ade_url_refusal);
Datum
ade_url_refusal(PG_FUNCTION_ARGS)
{
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *why;

	if (AdeUrlAllowed(url, &why))
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(why));
}

/* ade.enroll_url: empty (no built-in profile), or a URL devices can reach */
static bool
check_enroll_url(char **newval, void **extra, GucSource source)
{
	char	   *why;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (AdeUrlAllowed(*newval, &why))
		return true;
	GUC_check_errdetail("The enrollment URL cannot be used: %s.", why);
	GUC_check_errhint("Devices need an absolute https URL of the MDM server's enrollment endpoint (http only for a loopback test server).");
	return false;
}

/*
 * ade.abm_url: refused when it is set interactively (SET, ALTER SYSTEM,
 * ALTER DATABASE/ROLE ... SET, which test the value); taken as it is from
 * the configuration file or stored database and role settings, where a
 * refusal would leave the default (Apple) in its place: every request then
 * refuses it (AdeAbmBaseUrl()), so a mistyped test URL never falls back to
 * Apple.
 */
static bool
check_abm_url(char **newval, void **extra, GucSource source)
{
	char	   *why;

	if (AdeUrlAllowed(*newval, &why))
		return true;
	if (source < PGC_S_INTERACTIVE)
		return true;
	GUC_check_errmsg("invalid value for ade.abm_url: %s", why);
	return false;
}

/* ade.abm_api_url, ade.abm_token_url: ade.abm_url's rule (empty: Apple's) */
static bool
check_api_url(char **newval, void **extra, GucSource source)
{
	char	   *why;

	if (*newval == NULL || (*newval)[0] == '\0' || AdeUrlAllowed(*newval, &why))
		return true;
	if (source < PGC_S_INTERACTIVE)
		return true;			/* kept: every request refuses it */
	GUC_check_errmsg("invalid value: %s", why);
	GUC_check_errhint("Set an https URL, or an http URL of a loopback host.");
	return false;
}

static void
assign_abm_url(const char *newval, void *extra)
{
	/* a valid value has been set: forget any earlier rejected one */
	if (rejected_abm_url != NULL)
	{
		free(rejected_abm_url);
		rejected_abm_url = NULL;
	}
}

/* ade_preloaded() returns boolean: whether this server preloaded ade */
PG_FUNCTION_INFO_V1(ade_preloaded);
Datum
ade_preloaded(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(AdeKekWalRegistered());
}

/*
 * What calls ABM runs on the primary: a standby stores nothing, so it asks
 * nothing (what it would ask, the primary asks and stores).  Each such
 * function says so first; the base URL of every request (below) is the
 * backstop.
 */
void
AdeRefuseOnStandby(const char *what)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("%s runs on the primary: this server is a standby (in recovery)", what),
				 errdetail("Nothing was sent to ABM. A standby's tables are the primary's, replayed: ade_status and hosts can be read here."),
				 errhint("Call it on the primary; after a failover, on the promoted server.")));
}

/*
 * The ABM base URL for a request, checked again now.  Raises an ERROR when
 * the URL is not allowed or a rejected value is still pending, or on a
 * standby.
 */
const char *
AdeAbmBaseUrl(void)
{
	char	   *why;

	AdeRefuseOnStandby("every request to ABM");
	if (rejected_abm_url != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ade.abm_url was set to a value that is not allowed"),
				 errdetail("The value was rejected when the ade library loaded; no request is sent until a valid value is set."),
				 errhint("Set ade.abm_url to an https URL, or to an http URL of a loopback host.")));
	if (!AdeUrlAllowed(ade_abm_url, &why))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ade.abm_url is not allowed: %s", why),
				 errdetail("No request is sent, to it or to Apple, until a valid value is set."),
				 errhint("Set ade.abm_url to an https URL, or to an http URL of a loopback host.")));
	return ade_abm_url;
}

/*
 * The pg_extension row of ade in this database: its schema and the version
 * of its SQL (which may be older than this library until ALTER EXTENSION
 * ade UPDATE runs).
 */
/*
 * A run reads it once (AdeRunCacheBegin): it asks for the schema in every
 * query it makes, and each read is two catalog index scans.  Nothing in a
 * run changes it; a concurrent ALTER EXTENSION is seen by the next run.
 */
static struct
{
	bool		on;
	Oid			nsp;
	char	   *version;
	Oid			owner;
	char	   *schema;			/* quoted */
	MemoryContext cxt;
}			run_cache;

static void ade_extension_read(Oid *nsp, char **version, Oid *owner);

static void
ade_extension(Oid *nsp, char **version, Oid *owner)
{
	if (run_cache.on)
	{
		*nsp = run_cache.nsp;
		*version = run_cache.version;
		if (owner)
			*owner = run_cache.owner;
		return;
	}
	ade_extension_read(nsp, version, owner);
}

/* from now until AdeRunCacheEnd(), ade's pg_extension row as it is now */
void
AdeRunCacheBegin(void)
{
	Oid			nsp;
	char	   *version;
	Oid			owner;
	MemoryContext old;

	AdeRunCacheEnd();
	ade_extension_read(&nsp, &version, &owner);
	run_cache.cxt = AllocSetContextCreate(TopMemoryContext, "ade run cache", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(run_cache.cxt);
	run_cache.nsp = nsp;
	run_cache.version = version ? pstrdup(version) : NULL;
	run_cache.owner = owner;
	run_cache.schema = pstrdup(quote_identifier(get_namespace_name(nsp)));
	MemoryContextSwitchTo(old);
	run_cache.on = true;
}

void
AdeRunCacheEnd(void)
{
	run_cache.on = false;
	if (run_cache.cxt)
		MemoryContextDelete(run_cache.cxt);
	run_cache.cxt = NULL;
}

static void
ade_extension_read(Oid *nsp, char **version, Oid *owner)
{
	Oid			ext = get_extension_oid("ade", true);
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;

	*nsp = InvalidOid;
	*version = NULL;
	if (!OidIsValid(ext))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"ade\" is not installed in this database")));
	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(ext));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		*nsp = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
		if (owner != NULL)
			*owner = ((Form_pg_extension) GETSTRUCT(tup))->extowner;
		if (!isnull)
			*version = text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (!OidIsValid(*nsp))
		elog(ERROR, "extension \"ade\" has no schema");
}

/*
 * The quoted name of the schema the extension lives in, for the queries of
 * the C code.  Values always travel as $n parameters; only this identifier
 * is put into query text, quoted.
 */
const char *
AdeSchema(void)
{
	Oid			nsp;
	char	   *version;

	if (run_cache.on)
		return run_cache.schema;
	ade_extension(&nsp, &version, NULL);
	return quote_identifier(get_namespace_name(nsp));
}

/* the OID of the schema the extension lives in */
Oid
AdeSchemaOid(void)
{
	Oid			nsp;
	char	   *version;

	ade_extension(&nsp, &version, NULL);
	return nsp;
}

/* the role that owns the extension (who installed it) */
Oid
AdeExtensionOwner(void)
{
	Oid			nsp;
	char	   *version;
	Oid			owner = InvalidOid;

	ade_extension(&nsp, &version, &owner);
	return owner;
}

/*
 * Is the extension's SQL in this database at least major.minor?  The
 * library serves every version's SQL, so that ALTER EXTENSION ade UPDATE
 * may follow make install at any time: what a newer SQL adds is used only
 * once it is there.
 */
bool
AdeSqlAtLeast(int major, int minor)
{
	Oid			nsp;
	char	   *version;
	int			ma = 0;
	int			mi = 0;

	ade_extension(&nsp, &version, NULL);
	if (version == NULL || sscanf(version, "%d.%d", &ma, &mi) != 2)
		return false;
	return ma > major || (ma == major && mi >= minor);
}

void
_PG_init(void)
{
	const char *placeholder;

	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		elog(ERROR, "curl_global_init failed");

	/* remember what was SET before we loaded, to notice a rejected value */
	placeholder = GetConfigOption("ade.abm_url", true, false);
	if (placeholder != NULL)
		placeholder = pstrdup(placeholder);

	DefineCustomStringVariable("ade.abm_url",
							   "Base URL of Apple's device assignment service (ABM).",
							   "https is always verified; plain http is refused except to a loopback host.",
							   &ade_abm_url,
							   "https://mdmenrollment.apple.com",
							   PGC_SUSET, 0,
							   check_abm_url, assign_abm_url, NULL);

	if (placeholder != NULL && strcmp(placeholder, ade_abm_url) != 0)
	{
		rejected_abm_url = strdup(placeholder);
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ade.abm_url was set to a value that is not allowed"),
				 errdetail("No ABM request is sent until a valid value is set.")));
	}

	DefineCustomStringVariable("ade.enroll_url",
							   "MDM enrollment URL put in the built-in default profile.",
							   "Empty means no built-in profile: devices are stored but not assigned.",
							   &ade_enroll_url, "",
							   PGC_SUSET, 0, check_enroll_url, NULL, NULL);

	DefineCustomIntVariable("ade.http_timeout",
							"Time limit of one ABM request.",
							"From 100 ms to 10 minutes.",
							&ade_http_timeout, 30000, 100, 600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);

	DefineCustomIntVariable("ade.connect_timeout",
							"Time limit to connect to ABM.",
							"From 100 ms to 10 minutes.",
							&ade_connect_timeout, 10000, 100, 600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);

	DefineCustomIntVariable("ade.page_size",
							"Devices asked for per ABM page.",
							"From 1 to 1000, Apple's maximum.",
							&ade_page_size, 1000, 1, 1000,
							PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("ade.max_sync_seconds",
							"Time budget of a whole ade_sync() run, every token, retries and assignment included.",
							"From 1 second to 1 day; no request runs past it, and the next run goes on from the stored cursor.",
							&ade_max_sync_seconds, 45, 1, 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);

	DefineCustomIntVariable("ade.failed_retry_interval",
							"Time before a FAILED profile assignment, a refused profile or a kept device record is tried again.",
							"From 1 second to 30 days.",
							&ade_failed_retry_interval, 3600, 1, 30 * 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);

	DefineCustomIntVariable("ade.max_response_bytes",
							"Largest ABM response body accepted.",
							"From 1 kB to 1 GB; a larger answer is an error.",
							&ade_max_response_bytes, 64 * 1024 * 1024, 1024, 1024 * 1024 * 1024,
							PGC_SUSET, GUC_UNIT_BYTE, NULL, NULL, NULL);

	DefineCustomStringVariable("ade.ca_file",
							   "CA bundle (PEM file) that ABM's TLS certificate is verified against.",
							   "Empty means the system's bundle.",
							   &ade_ca_file, "",
							   PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("ade.runs_retention",
							"How long ade_sync_runs keeps its history.",
							"From 1 minute to 10 years; older rows are pruned by ade_sync().",
							&ade_runs_retention, 7 * 24 * 60, 1, 10 * 365 * 24 * 60,
							PGC_SUSET, GUC_UNIT_MIN, NULL, NULL, NULL);

	DefineCustomStringVariable("ade.proxy",
							   "HTTP(S) proxy for ABM requests; only superusers may read it (it may hold a password).",
							   "Empty means a direct connection (proxy environment variables are ignored); only https goes through it.",
							   &ade_proxy, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);

	DefineCustomIntVariable("ade.max_retries",
							"Retries of an ABM request that failed with 5xx, 429 or a broken connection.",
							"From 0 to 10, with exponential backoff.",
							&ade_max_retries, 3, 0, 10,
							PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("ade.retry_backoff",
							"Wait before the first retry; doubled at each further retry.",
							"From 0 to 1 minute.",
							&ade_retry_backoff, 500, 0, 60000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);

	DefineCustomIntVariable("ade.max_retry_wait",
							"Longest Retry-After of a 429 answer waited out within a run.",
							"From 0 to 10 minutes; a longer one leaves the token for a later run.",
							&ade_max_retry_wait, 10, 0, 600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);

	DefineCustomIntVariable("ade.max_concurrent_requests",
							"Most requests to ABM a run has in flight at once, over its tokens.",
							"From 1 (one token at a time, as before 0.5) to 256; each token still has one page applied at a time.",
							&ade_max_concurrent_requests, 32, 1, 256,
							PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("ade.reconcile_interval",
							"How often each token reconciles: a full fetch beside the sync that soft-deletes what ABM no longer lists.",
							"Minutes from the end of the last reconcile (or the token's first full fetch); 0 turns it off (ade_request_reconcile() still works).",
							&ade_reconcile_interval, 1440, 0, 525600,
							PGC_SUSET, GUC_UNIT_MIN, NULL, NULL, NULL);

	DefineCustomIntVariable("ade.min_refetch_interval",
							"Least time between two ade_request_reconcile() of a token.",
							"A request within it is refused with the time left, so that a script cannot make ABM list every device over and over.",
							&ade_min_refetch_interval, 60, 0, 10080,
							PGC_SUSET, GUC_UNIT_MIN, NULL, NULL, NULL);

	DefineCustomStringVariable("ade.abm_api_url",
							   "Base URL of Apple's Business/School Manager API.",
							   "Empty: https://api-business.apple.com, or https://api-school.apple.com for a SCHOOLAPI. account. ade.abm_url's rules: https, or http to a loopback host.",
							   &ade_abm_api_url, "",
							   PGC_SUSET, 0, check_api_url, NULL, NULL);

	DefineCustomStringVariable("ade.abm_token_url",
							   "Token endpoint of the Business/School Manager API's accounts.",
							   "ade.abm_url's rules: https, or http to a loopback host.",
							   &ade_abm_token_url, "https://account.apple.com/auth/oauth2/token",
							   PGC_SUSET, 0, check_api_url, NULL, NULL);

	DefineCustomIntVariable("ade.inventory_interval",
							"How often ade_sync() reads each API account's inventory (every device of the organisation).",
							"Minutes from the end of the last complete inventory; a pass goes on over as many runs as it takes. 0: only ade_inventory_sync().",
							&ade_inventory_interval, 60, 0, 525600,
							PGC_SUSET, GUC_UNIT_MIN, NULL, NULL, NULL);

	DefineCustomIntVariable("ade.applecare_per_run",
							"Devices whose AppleCare coverage each run fetches, per API account, those checked longest ago first.",
							"One request per device (Apple has no bulk call); 0: only ade_refresh_applecare().",
							&ade_applecare_per_run, 10, 0, 1000,
							PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomBoolVariable("ade.replicate_key",
							 "Logs the key-encryption key into the WAL, so that every standby makes ade_kek.key as it replays.",
							 "Off: a standby gets the file with its base backup only. On (for a failover formation): every node must preload ade 0.5, and the key passes through the WAL and its buffers in shared memory.",
							 &ade_replicate_key, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomBoolVariable("ade.allow_drop",
							 "Lets DROP EXTENSION ade (or a DROP that takes it along) delete its tokens, key pair and hosts.",
							 "Off: such a drop is refused with what it would lose; set it in the session that drops.",
							 &ade_allow_drop, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	MarkGUCPrefixReserved("ade");

	/* the key-encryption key replayed on standbys (kekwal.c) */
	AdeKekWalRegister();
}
