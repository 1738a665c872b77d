/*-------------------------------------------------------------------------
 *
 * http.c
 *		HTTP transport of the ABM client: libcurl, the size cap, timeouts,
 *		interrupts, and the release of every curl resource on ERROR.
 *
 * Owns: the curl easy and multi handles, the request header list, the
 * response buffer and the response headers that ABM's protocol needs
 * (X-ADM-Auth-Session, Retry-After).  It knows nothing of ABM's meaning:
 * abm.c builds requests and reads answers.
 *
 * Design notes:
 *
 * - Pools.  A run's requests sent ahead (ahead.c) share one multi handle,
 *   the run's pool, and its connections.  The sync loop's own requests
 *   (sessions, assignments, a page not sent ahead) each use a connection
 *   of their own, so that requests ahead stuck at ABM never make the loop
 *   wait for a connection; while the loop waits it drives the run's pool
 *   too.
 *
 * - Interrupts.  The transfer is driven with curl's multi interface in a loop
 *   that waits at most 100 ms in curl_multi_poll and calls
 *   CHECK_FOR_INTERRUPTS() between turns, outside any curl callback.  So
 *   pg_cancel_backend() and statement_timeout end a hung request within about
 *   100 ms, and the ERROR they raise carries its true reason and SQLSTATE
 *   (57014 "canceling statement due to statement timeout").  No callback ever
 *   raises an ERROR or allocates with palloc: the write and header callbacks
 *   use malloc and report trouble through flags.
 *
 * - Cleanup.  An AdeHttp lives in its own memory context; a reset callback
 *   on that context frees the curl handles, the header list and the malloc'd
 *   buffers.  Whether the context is deleted by AdeHttpDestroy() or by the
 *   abort of the (sub)transaction whose memory it hangs from, nothing leaks.
 *
 * - Safety.  The URL is checked (AdeUrlAllowed) before every request; curl is
 *   limited to http and https, follows no redirect, always verifies the TLS
 *   peer (against ade.ca_file alone when it is set, else the system's CAs),
 *   ignores proxy environment variables, uses ade.proxy only for https, and
 *   refuses a plain http request when ade.proxy is set (the OAuth header
 *   and the session would cross the proxy unencrypted).
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/http.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>
#include <limits.h>
#include <time.h>

#include "ade.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/*
 * A multi handle and the transfers attached to it: one of a run (every
 * request of the run, the ones sent ahead included, share its connections),
 * or one of a transfer of its own outside a run.
 */
struct AdeHttpPool
{
	MemoryContext cxt;
	MemoryContextCallback cb;
	CURLM	   *multi;
	dlist_head	attached;		/* AdeHttp transfers in the multi */
	void		(*on_done) (AdeHttp *http, void *arg);	/* a transfer ended */
	void	   *on_done_arg;
};

/* the run's pool, while a run has one (AdeHttpPoolBegin) */
static AdeHttpPool *run_pool = NULL;

struct AdeHttp
{
	MemoryContext cxt;
	MemoryContextCallback cb;
	CURL	   *easy;
	AdeHttpPool *own;			/* used when no run's pool is there */
	AdeHttpPool *pool;			/* the pool it is attached to, or NULL */
	dlist_node	node;			/* in pool->attached */
	bool		done;			/* the transfer ended (code says how) */
	CURLcode	code;
	void	   *owner;			/* the caller's, for the pool's on_done */
	struct curl_slist *headers;
	/* response, malloc'd: filled by curl callbacks */
	char	   *buf;
	size_t		len;
	size_t		cap;
	size_t		limit;
	bool		too_large;
	bool		out_of_memory;
	char	   *session_header;
	int			retry_after;
	bool		retry_after_bounded;
	char		errbuf[CURL_ERROR_SIZE];
};

/* replace every occurrence of needle in *text (a palloc'd string) */
static void
replace_all(char **text, const char *needle, const char *with)
{
	StringInfoData out;
	const char *p = *text;
	const char *hit;
	size_t		n = strlen(needle);

	if (n == 0 || strstr(p, needle) == NULL)
		return;
	initStringInfo(&out);
	while ((hit = strstr(p, needle)) != NULL)
	{
		appendBinaryStringInfo(&out, p, hit - p);
		appendStringInfoString(&out, with);
		p = hit + n;
	}
	appendStringInfoString(&out, p);
	*text = out.data;
}

/*
 * A text that ends with the start of needle (three characters or more: a
 * quote of it that libcurl's error buffer cut short) loses that end.
 */
static void
redact_cut_tail(char **text, const char *needle)
{
	size_t		tl = strlen(*text);
	size_t		k = Min(tl, strlen(needle));

	for (; k >= 3; k--)
		if (strncmp(*text + tl - k, needle, k) == 0)
		{
			*text = psprintf("%.*s[redacted]", (int) (tl - k), *text);
			return;
		}
}

/*
 * The credentials of a setting that may carry them (ade.proxy, and
 * ade.abm_url from a file, where a SET would refuse them): the whole value,
 * and each piece of what lies between its scheme and the last "@" (split
 * at ":" and "@", three characters or more), raw and percent-decoded, so
 * that a quote of a part (a host parsed out of a malformed password) shows
 * none of it.
 */
static void
redact_setting(char **text, const char *value, const char *name)
{
	const char *from;
	const char *at;
	char	   *cred;
	char	   *decoded;
	char	   *tok;
	char	   *save;
	int			pass;

	if (value == NULL || value[0] == '\0' || (at = strrchr(value, '@')) == NULL)
		return;
	replace_all(text, value, psprintf("[%s]", name));
	redact_cut_tail(text, value);
	from = strstr(value, "://");
	from = (from && from < at) ? from + 3 : value;
	cred = pnstrdup(from, at - from);
	/* percent-decoded, as libcurl may quote it */
	decoded = palloc(strlen(cred) + 1);
	{
		const char *r = cred;
		char	   *w = decoded;

		while (*r)
		{
			if (r[0] == '%' && isxdigit((unsigned char) r[1]) && isxdigit((unsigned char) r[2]))
			{
				char		hex[3] = {r[1], r[2], '\0'};

				*w++ = (char) strtol(hex, NULL, 16);
				r += 3;
			}
			else
				*w++ = *r++;
		}
		*w = '\0';
	}
	for (pass = 0; pass < 2; pass++)
	{
		char	   *c = pstrdup(pass == 0 ? cred : decoded);

		replace_all(text, c, "[redacted]");
		redact_cut_tail(text, c);
		for (tok = strtok_r(c, ":@", &save); tok; tok = strtok_r(NULL, ":@", &save))
			if (strlen(tok) >= 3)
			{
				replace_all(text, tok, "[redacted]");
				redact_cut_tail(text, tok);
			}
		/* strtok_r cut c at its separators: its whole length is wiped */
		explicit_bzero(c, strlen(pass == 0 ? cred : decoded));
	}
	/* no copy of the credentials stays in the backend's memory */
	explicit_bzero(decoded, strlen(decoded));
	explicit_bzero(cred, strlen(cred));
}

/*
 * Text from libcurl or OpenSSL made fit for a table, a NOTIFY or a
 * message: every such text goes through here.  ade.proxy and ade.abm_url,
 * when they carry credentials, are replaced wherever they are quoted (whole
 * or in part), and so is the user information of any URL in it: what lies
 * between "://" and the last "@" of its authority.
 */
char *
AdeRedact(const char *text)
{
	char	   *out = pstrdup(text ? text : "");
	char	   *p;

	redact_setting(&out, ade_proxy, "ade.proxy");
	redact_setting(&out, ade_abm_url, "ade.abm_url");
	p = out;
	while ((p = strstr(p, "://")) != NULL)
	{
		char	   *auth = p + 3;
		size_t		len = strcspn(auth, "/?#'\" \t\r\n)<>");
		char	   *at = NULL;
		char	   *q;

		for (q = auth; q < auth + len; q++)
			if (*q == '@')
				at = q;
		if (at != NULL)
		{
			char	   *rest = pstrdup(at);
			size_t		head = auth - out;

			out = psprintf("%.*s[redacted]%s", (int) head, out, rest);
			p = out + head + strlen("[redacted]");
		}
		else
			p = auth;
	}
	return out;
}

static void
http_reset_response(AdeHttp *http)
{
	/* an answer may hold a session token (GET /session): wiped, then freed */
	if (http->buf)
		explicit_bzero(http->buf, http->cap);
	if (http->session_header)
		explicit_bzero(http->session_header, strlen(http->session_header));
	free(http->buf);
	http->buf = NULL;
	http->len = http->cap = 0;
	http->too_large = false;
	http->out_of_memory = false;
	free(http->session_header);
	http->session_header = NULL;
	http->retry_after = -1;
	http->retry_after_bounded = false;
	http->errbuf[0] = '\0';
}

/* the request headers (an OAuth header or a session token): wiped, freed */
static void
free_headers(AdeHttp *http)
{
	struct curl_slist *l;

	for (l = http->headers; l != NULL; l = l->next)
		explicit_bzero(l->data, strlen(l->data));
	curl_slist_free_all(http->headers);
	http->headers = NULL;
}

/* take a transfer out of its pool's multi (a transfer cut short, or done) */
static void
http_detach(AdeHttp *http)
{
	if (http->pool == NULL)
		return;
	curl_multi_remove_handle(http->pool->multi, http->easy);
	dlist_delete(&http->node);
	http->pool = NULL;
}

/* memory-context reset callback of a pool: its transfers are let go first */
static void
pool_release(void *arg)
{
	AdeHttpPool *pool = (AdeHttpPool *) arg;
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &pool->attached)
		http_detach(dlist_container(AdeHttp, node, it.cur));
	if (pool->multi)
		curl_multi_cleanup(pool->multi);
	pool->multi = NULL;
	if (run_pool == pool)
		run_pool = NULL;
}

static AdeHttpPool *
pool_create(MemoryContext parent)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "ade http pool", ALLOCSET_SMALL_SIZES);
	AdeHttpPool *pool = MemoryContextAllocZero(cxt, sizeof(AdeHttpPool));

	pool->cxt = cxt;
	dlist_init(&pool->attached);
	pool->cb.func = pool_release;
	pool->cb.arg = pool;
	MemoryContextRegisterResetCallback(cxt, &pool->cb);
	pool->multi = curl_multi_init();
	if (pool->multi == NULL)
	{
		MemoryContextDelete(cxt);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not initialize libcurl")));
	}
	return pool;
}

/*
 * The run's pool, in the current memory context, for the requests of the
 * run until AdeHttpPoolEnd() (or until that context goes, on ERROR):
 * every transfer of the run is attached to it, so that all share its
 * connections and each wait for one answer moves the others on.  on_done,
 * when set, is told of each transfer that ends while the pool is driven.
 */
void
AdeHttpPoolBegin(int max_connections, void (*on_done) (AdeHttp *, void *), void *arg)
{
	AdeHttpPool *pool = pool_create(CurrentMemoryContext);

	curl_multi_setopt(pool->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) Max(max_connections, 1));
	pool->on_done = on_done;
	pool->on_done_arg = arg;
	run_pool = pool;
}

void
AdeHttpPoolEnd(void)
{
	if (run_pool)
		MemoryContextDelete(run_pool->cxt); /* clears run_pool */
}

/* memory-context reset callback: frees everything curl and we malloc'd */
static void
http_release(void *arg)
{
	AdeHttp    *http = (AdeHttp *) arg;

	http_detach(http);
	if (http->easy)
		curl_easy_cleanup(http->easy);
	if (http->headers)
		free_headers(http);
	http->easy = NULL;
	http_reset_response(http);
}

AdeHttp *
AdeHttpCreate(void)
{
	MemoryContext cxt;
	AdeHttp    *http;

	cxt = AllocSetContextCreate(CurrentMemoryContext, "ade http",
								ALLOCSET_SMALL_SIZES);
	http = MemoryContextAllocZero(cxt, sizeof(AdeHttp));
	http->cxt = cxt;
	http->retry_after = -1;
	http->done = true;
	http->cb.func = http_release;
	http->cb.arg = http;
	MemoryContextRegisterResetCallback(cxt, &http->cb);

	http->easy = curl_easy_init();
	if (http->easy == NULL)
	{
		MemoryContextDelete(cxt);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not initialize libcurl")));
	}
	return http;
}

void
AdeHttpDestroy(AdeHttp *http)
{
	if (http)
		MemoryContextDelete(http->cxt);
}

void
AdeHttpSetOwner(AdeHttp *http, void *owner)
{
	http->owner = owner;
}

void *
AdeHttpOwner(AdeHttp *http)
{
	return http->owner;
}

bool
AdeHttpDone(AdeHttp *http)
{
	return http->done;
}

/* the answer so far of a transfer that ended: status and body (not NUL-safe) */
long
AdeHttpPeek(AdeHttp *http, const char **body, size_t *len)
{
	long		status = 0;

	*body = http->buf ? http->buf : "";
	*len = http->len;
	if (http->code != CURLE_OK || http->too_large || http->out_of_memory)
		return 0;
	curl_easy_getinfo(http->easy, CURLINFO_RESPONSE_CODE, &status);
	return status;
}

static size_t
http_write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	AdeHttp    *http = (AdeHttp *) arg;
	size_t		n = size * nmemb;

	if (http->len + n > http->limit)
	{
		http->too_large = true;
		return 0;				/* curl aborts with CURLE_WRITE_ERROR */
	}
	if (http->len + n + 1 > http->cap)
	{
		size_t		cap = http->cap ? http->cap : 16384;
		char	   *nbuf;

		while (cap < http->len + n + 1)
			cap *= 2;
		nbuf = realloc(http->buf, cap);
		if (nbuf == NULL)
		{
			http->out_of_memory = true;
			return 0;
		}
		http->buf = nbuf;
		http->cap = cap;
	}
	memcpy(http->buf + http->len, data, n);
	http->len += n;
	http->buf[http->len] = '\0';
	return n;
}

/* header line "Name: value\r\n": keep the two headers ABM's protocol uses */
static size_t
http_header_cb(char *data, size_t size, size_t nitems, void *arg)
{
	AdeHttp    *http = (AdeHttp *) arg;
	size_t		n = size * nitems;
	static const char sess[] = "x-adm-auth-session:";
	static const char retry[] = "retry-after:";

	if (n > sizeof(sess) - 1 && pg_strncasecmp(data, sess, sizeof(sess) - 1) == 0)
	{
		const char *v = data + sizeof(sess) - 1;
		size_t		vl = n - (sizeof(sess) - 1);

		while (vl > 0 && (*v == ' ' || *v == '\t'))
			v++, vl--;
		while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
			vl--;
		if (vl > 0 && vl < 4096)
		{
			char	   *s = malloc(vl + 1);

			if (s)
			{
				memcpy(s, v, vl);
				s[vl] = '\0';
				free(http->session_header);
				http->session_header = s;
			}
		}
	}
	else if (n > sizeof(retry) - 1 && pg_strncasecmp(data, retry, sizeof(retry) - 1) == 0)
	{
		/*
		 * Either form RFC 9110 allows: delta-seconds, or an HTTP date (to
		 * seconds from now; one in the past is 0).  One past
		 * ADE_MAX_RETRY_AFTER is bounded (abm.c logs it); one that is
		 * neither is none.
		 */
		char		v[128];
		size_t		vl = n - (sizeof(retry) - 1);
		const char *s = data + sizeof(retry) - 1;
		char	   *end;
		long		secs;

		while (vl > 0 && (*s == ' ' || *s == '\t'))
			s++, vl--;
		while (vl > 0 && (s[vl - 1] == '\r' || s[vl - 1] == '\n' || s[vl - 1] == ' ' || s[vl - 1] == '\t'))
			vl--;
		http->retry_after = -1;
		http->retry_after_bounded = false;
		if (vl > 0 && vl < sizeof(v))
		{
			memcpy(v, s, vl);
			v[vl] = '\0';
			if (isdigit((unsigned char) v[0]))
			{
				errno = 0;
				secs = strtol(v, &end, 10);
				if (*end != '\0')
					secs = -1;
				else if (errno == ERANGE)
					secs = LONG_MAX;
			}
			else
			{
				time_t		when = curl_getdate(v, NULL);

				secs = when == -1 ? -1 : Max((long) (when - time(NULL)), 0L);
			}
			if (secs > ADE_MAX_RETRY_AFTER)
			{
				secs = ADE_MAX_RETRY_AFTER;
				http->retry_after_bounded = true;
			}
			http->retry_after = (int) secs;
		}
	}
	return n;
}

#define SETOPT(opt, val) \
	do { \
		CURLcode _c = curl_easy_setopt(http->easy, (opt), (val)); \
		if (_c != CURLE_OK) \
			ereport(ERROR, \
					(errcode(ERRCODE_INTERNAL_ERROR), \
					 errmsg("could not set curl option %s: %s", #opt, AdeRedact(curl_easy_strerror(_c))))); \
	} while (0)

/*
 * Start a request in the run's pool (or the transfer's own): the checks
 * and options, then into the multi.  Nothing is sent until the pool is
 * driven (AdeHttpPump(), AdeHttpWait()).  The caller chooses the timeouts
 * (ABM's settings, cut to what is left of the run's time budget).
 */
void
AdeHttpStart(AdeHttp *http, const char *method, const char *url,
			 const char *const *headers, int nheaders,
			 const char *body, long timeout_ms, long connect_timeout_ms)
{
	char	   *why;
	CURLMcode	mc;
	int			i;
	AdeHttpPool *pool;

	/* checked again before every request, whatever the setting said */
	if (!AdeUrlAllowed(url, &why))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("refusing to send a request to this ABM URL: %s", why),
				 errhint("Set ade.abm_url to an https URL, or to an http URL of a loopback host.")));

	/*
	 * The requests sent ahead in the run's pool; the loop's own on their
	 * own connections, in a pool of the transfer's (a child context: it
	 * goes before the transfer, detaching it)
	 */
	if (run_pool && http->owner)
		pool = run_pool;
	else
	{
		if (http->own == NULL)
			http->own = pool_create(http->cxt);
		pool = http->own;
	}

	/* a request cut short by an ERROR may have left the handle attached */
	http_detach(http);
	http_reset_response(http);
	http->done = false;
	http->code = CURLE_OK;
	http->limit = (size_t) ade_max_response_bytes;
	if (http->headers)
		free_headers(http);
	for (i = 0; i < nheaders; i++)
	{
		struct curl_slist *l = curl_slist_append(http->headers, headers[i]);

		if (l == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory building the request headers")));
		http->headers = l;
	}

	SETOPT(CURLOPT_URL, url);
	SETOPT(CURLOPT_NOSIGNAL, 1L);
	SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
	SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
	SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
	if (ade_ca_file && ade_ca_file[0])
	{
		/* the only trust anchors: no system bundle, no system CA directory */
		SETOPT(CURLOPT_CAINFO, ade_ca_file);
		SETOPT(CURLOPT_CAPATH, (char *) NULL);
	}
	else
	{
		/* the system's (the handle may have had ade.ca_file before) */
		char	   *info = NULL;
		char	   *path = NULL;

		curl_easy_getinfo(http->easy, CURLINFO_CAINFO, &info);
		curl_easy_getinfo(http->easy, CURLINFO_CAPATH, &path);
		SETOPT(CURLOPT_CAINFO, info);
		SETOPT(CURLOPT_CAPATH, path);
	}
	if (ade_proxy && ade_proxy[0] && pg_strncasecmp(url, "http:", 5) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("refusing to send a plain http request to ABM through ade.proxy"),
				 errdetail("It would carry the OAuth header and the session token unencrypted to the proxy."),
				 errhint("Use an https ade.abm_url, or reset ade.proxy for a loopback test server.")));
	SETOPT(CURLOPT_PROXY, ade_proxy ? ade_proxy : "");
	SETOPT(CURLOPT_TIMEOUT_MS, Max(timeout_ms, 1L));
	SETOPT(CURLOPT_CONNECTTIMEOUT_MS, Max(connect_timeout_ms, 1L));
	SETOPT(CURLOPT_HTTPHEADER, http->headers);
	SETOPT(CURLOPT_WRITEFUNCTION, http_write_cb);
	SETOPT(CURLOPT_WRITEDATA, http);
	SETOPT(CURLOPT_HEADERFUNCTION, http_header_cb);
	SETOPT(CURLOPT_HEADERDATA, http);
	SETOPT(CURLOPT_ERRORBUFFER, http->errbuf);
	SETOPT(CURLOPT_PRIVATE, http);
	SETOPT(CURLOPT_ACCEPT_ENCODING, "");
	if (strcmp(method, "GET") == 0)
	{
		SETOPT(CURLOPT_HTTPGET, 1L);
		SETOPT(CURLOPT_CUSTOMREQUEST, (char *) NULL);
	}
	else
	{
		SETOPT(CURLOPT_POST, 1L);
		/* copied: the caller's body may go before the transfer does */
		SETOPT(CURLOPT_POSTFIELDSIZE, (long) (body ? strlen(body) : 0));
		SETOPT(CURLOPT_COPYPOSTFIELDS, body ? body : "");
		SETOPT(CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") == 0 ? (char *) NULL : method);
	}

	mc = curl_multi_add_handle(pool->multi, http->easy);
	if (mc != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not start an ABM request: %s", curl_multi_strerror(mc))));
	http->pool = pool;
	dlist_push_tail(&pool->attached, &http->node);
}

/*
 * One turn of a pool: move every transfer on, mark those that ended (out
 * of the multi, on_done told), then wait up to wait_ms for sockets when
 * some are still running.  Never raises from inside curl; the caller checks
 * for interrupts between turns.
 */
static void
pool_turn(AdeHttpPool *pool, int wait_ms)
{
	int			running = 0;
	int			left;
	CURLMsg    *msg;
	CURLMcode	mc;

	mc = curl_multi_perform(pool->multi, &running);
	while (mc == CURLM_OK && (msg = curl_multi_info_read(pool->multi, &left)) != NULL)
	{
		AdeHttp    *done = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &done);
		if (done == NULL)
			continue;
		done->code = msg->data.result;
		done->done = true;
		http_detach(done);		/* msg is not used after this */
		if (pool->on_done)
			pool->on_done(done, pool->on_done_arg);
	}
	if (mc == CURLM_OK && running > 0 && wait_ms > 0)
		mc = curl_multi_poll(pool->multi, NULL, 0, wait_ms, NULL);
	if (mc != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("ABM request failed in libcurl: %s", curl_multi_strerror(mc))));
}

/* move the run's requests on without waiting (between the steps of a run) */
void
AdeHttpPump(void)
{
	if (run_pool)
		pool_turn(run_pool, 0);
}

/*
 * Wait for a started transfer to end, driving its pool (and so every other
 * request of the run), raising on interrupts only: cancel, statement_timeout
 * and terminate end the wait within about 100 ms with their own reason.
 */
void
AdeHttpWait(AdeHttp *http)
{
	(void) AdeHttpWaitUntil(http, 0);
}

/*
 * The same, giving up at until (0: never): false when the transfer had not
 * ended by then (it goes on; the caller drops it or waits again).  A
 * transfer of its own pool (the sync loop's own requests) drives the run's
 * pool too, so that the requests sent ahead go on while it waits.
 */
bool
AdeHttpWaitUntil(AdeHttp *http, TimestampTz until)
{
	while (!http->done)
	{
		bool		both = run_pool != NULL && http->pool != run_pool;

		/* cancel, statement_timeout, terminate: raised here, with their reason */
		CHECK_FOR_INTERRUPTS();
		if (http->pool == NULL)
			elog(ERROR, "ade: waiting for an ABM request that was never started");
		if (until != 0 && GetCurrentTimestamp() >= until)
			return false;
		if (both)
			pool_turn(run_pool, 0);
		pool_turn(http->pool, both ? 10 : 100);
	}
	CHECK_FOR_INTERRUPTS();
	return true;
}

/*
 * The answer of an ended transfer, in res (palloc'd in the current
 * context): transport failures in res->curl_code for the caller to
 * classify (abm.c retries some of them); an answer over the size cap or
 * out of memory raises.
 */
void
AdeHttpFinish(AdeHttp *http, AdeHttpResult *res)
{
	CURLcode	code = http->code;

	memset(res, 0, sizeof(*res));
	res->retry_after = -1;
	if (http->too_large)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("ABM response is larger than ade.max_response_bytes (%d bytes)",
						ade_max_response_bytes),
				 errhint("Raise ade.max_response_bytes or lower ade.page_size.")));
	if (http->out_of_memory)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory reading an ABM response")));

	curl_easy_getinfo(http->easy, CURLINFO_RESPONSE_CODE, &res->status);
	res->curl_code = (int) code;
	if (code != CURLE_OK)
	{
		curl_off_t	ct = 0;
		curl_off_t	pt = 0;

		res->timed_out = (code == CURLE_OPERATION_TIMEDOUT);
		/* a reused connection has no connect time, but a pretransfer time */
		curl_easy_getinfo(http->easy, CURLINFO_CONNECT_TIME_T, &ct);
		curl_easy_getinfo(http->easy, CURLINFO_PRETRANSFER_TIME_T, &pt);
		res->connected = ct > 0 || pt > 0;
		/*
		 * A full error buffer was cut short: what it quoted (a URL, the
		 * proxy) may end in the middle of a credential no pattern can
		 * recognise, so the quote goes from its opening mark on
		 */
		if (strlen(http->errbuf) >= CURL_ERROR_SIZE - 1 && strchr(http->errbuf, '\'') != NULL)
		{
			char	   *q = strchr(http->errbuf, '\'');

			strlcpy(q, "'...'", CURL_ERROR_SIZE - (q - http->errbuf));
		}
		res->curl_error = AdeRedact(http->errbuf[0] ? http->errbuf : curl_easy_strerror(code));
	}
	res->len = http->len;
	res->body = palloc(http->len + 1);
	if (http->len)
		memcpy(res->body, http->buf, http->len);
	res->body[http->len] = '\0';
	res->session_header = http->session_header ? pstrdup(http->session_header) : NULL;
	res->retry_after = http->retry_after;
	res->retry_after_bounded = http->retry_after_bounded;
	http_reset_response(http);
}

/* send one request and wait for its answer (Start, Wait, Finish) */
void
AdeHttpPerform(AdeHttp *http, const char *method, const char *url,
			   const char *const *headers, int nheaders,
			   const char *body, long timeout_ms, long connect_timeout_ms,
			   AdeHttpResult *res)
{
	AdeHttpStart(http, method, url, headers, nheaders, body, timeout_ms, connect_timeout_ms);
	AdeHttpWait(http);
	AdeHttpFinish(http, res);
}
