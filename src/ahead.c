/*-------------------------------------------------------------------------
 *
 * ahead.c
 *		Requests of a run sent ahead: the pages the sync loop will ask for,
 *		in flight side by side while it applies the pages before them.
 *
 * Owns: the queue of the requests a run expects to make (the first page of
 * each token, and the page after each page that said more_to_follow), how
 * many are in flight (ade.max_concurrent_requests) or answered and waiting,
 * and the hand-over of an answer to the one request it was made for.  It
 * does not decide what a request is (sync.c predicts, abm.c builds the
 * headers) nor what an answer means: a request sent ahead is only a request
 * sent early.
 *
 * Why this design: one backend, the sync loop unchanged.  Every guarantee a
 * run gives (the run lock, a token claimed in each step, a page per
 * subtransaction or per commit, the lock order with the application's
 * statements, the time budget, cancel) lives in the loop of sync.c, which
 * still does one token and one page at a time; what changes is only that
 * the answer it asks for is, most of the time, already there.  While the
 * loop applies token A's page, the answers for B, C, ... arrive in the same
 * libcurl multi handle (http.c), and the next page of each is asked for as
 * soon as its previous page is in: the round trips of all tokens overlap,
 * and the database work, which one backend does one page at a time anyway,
 * is what is left.
 *
 * The rules that keep it the same as asking late:
 * - The loop takes an answer only for the very request it would send now:
 *   same token, method, path, body and session header.  Anything else (a
 *   token renewed or claimed by another session since, a page that failed
 *   and left the old cursor, a rotated session) drops what was sent ahead
 *   for that token, and the loop sends its own request.
 * - Only read-only requests are sent ahead (the device list's pages), so a
 *   request that is never taken has changed nothing at ABM.
 * - An answer is taken as it came, a transport failure or a timeout too:
 *   it is the loop's first attempt, and abm.c retries it (ade.max_retries)
 *   or reports it as it would its own.  Its only limit in libcurl is the
 *   run's end (nothing drives it while the loop works on a page, and an
 *   answer that came meanwhile would be called a timeout); the loop waits
 *   for it no longer than for a request of its own (ade.http_timeout, its
 *   share of the run), from when it asks.
 * - Nothing is sent ahead after the run's deadline; a token paused by ABM's
 *   Retry-After is not asked (sync.c does not predict it).
 * - Memory: at most ade.max_concurrent_requests requests in flight, and as
 *   many answered and waiting; at most AHEAD_DEPTH per token.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/ahead.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "ade.h"
#include "lib/ilist.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/* answers of one token waiting for the loop at most */
#define AHEAD_DEPTH 8

typedef struct Ahead
{
	dlist_node	node;
	int64		token_id;
	int			order;			/* the token's place in the run */
	char	   *method;
	char	   *path;
	char	   *base;			/* ade.abm_url as it was: url is base + path */
	char	   *url;
	char	   *body;
	char	   *auth;			/* the session header: wiped when freed */
	const char *hdr[4];
	int			nhdr;
	AdeHttp    *http;			/* NULL until sent */
	MemoryContext cxt;			/* this request's memory */
	MemoryContextCallback wipe; /* the session header, however cxt goes */
} Ahead;

typedef struct AheadRun
{
	MemoryContext cxt;
	MemoryContextCallback cb;
	dlist_head	queue;			/* by order, then as queued */
	int			inflight;
	int			answered;
	int			max;
	TimestampTz deadline;
	AdeAheadNext next;
	int			sent;			/* requests sent ahead (for the run's note) */
	int			wasted;			/* answers dropped unused */
} AheadRun;

static AheadRun *run = NULL;

static void
ahead_free(Ahead *a)
{
	if (a->http)
	{
		if (AdeHttpDone(a->http))
			run->answered--;
		else
			run->inflight--;
	}
	dlist_delete(&a->node);
	/* the transfer (its curl handle, its answer) goes with the context */
	MemoryContextDelete(a->cxt);
}

/* reset callback of a request's memory: its session header is wiped */
static void
ahead_wipe(void *arg)
{
	Ahead	   *a = (Ahead *) arg;

	if (a->auth)
		explicit_bzero(a->auth, strlen(a->auth));
}

/* send what the limits allow, earliest tokens first */
static void
fill(void)
{
	dlist_iter	it;

	dlist_foreach(it, &run->queue)
	{
		Ahead	   *a = dlist_container(Ahead, node, it.cur);
		MemoryContext old;
		long		left;

		if (run->inflight >= run->max || run->inflight + run->answered >= 2 * run->max)
			return;
		if (a->http)
			continue;
		left = (long) ((run->deadline - GetCurrentTimestamp()) / 1000);
		if (left <= 0)
			return;
		old = MemoryContextSwitchTo(a->cxt);
		a->http = AdeHttpCreate();
		AdeHttpSetOwner(a->http, a);
		/*
		 * Bounded by the run's end only: between the loop's turns nothing
		 * drives the transfer, and libcurl would call an answer that
		 * arrived meanwhile a timeout.  ade.http_timeout counts from when
		 * the loop asks for it (AdeAheadTake()).
		 */
		AdeHttpStart(a->http, a->method, a->url, a->hdr, a->nhdr, a->body, left, left);
		MemoryContextSwitchTo(old);
		run->inflight++;
		run->sent++;
	}
}

/* how many requests of a token are queued, sent or answered */
static int
pending(int64 token_id)
{
	dlist_iter	it;
	int			n = 0;

	dlist_foreach(it, &run->queue)
		if (dlist_container(Ahead, node, it.cur)->token_id == token_id)
		n++;
	return n;
}

static void
queue(int64 token_id, int order, const char *method, const char *base, const char *path,
	  const char *body, const char *const *hdr, int nhdr)
{
	MemoryContext cxt;
	MemoryContext old;
	Ahead	   *a;
	dlist_iter	it;
	int			i;

	if (pending(token_id) >= AHEAD_DEPTH)
		return;
	cxt = AllocSetContextCreate(run->cxt, "ade request ahead", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	a = palloc0(sizeof(Ahead));
	a->cxt = cxt;
	a->token_id = token_id;
	a->order = order;
	a->method = pstrdup(method);
	a->path = pstrdup(path);
	a->base = pstrdup(base);
	a->url = psprintf("%s%s", base, path);
	a->body = body ? pstrdup(body) : NULL;
	a->nhdr = nhdr;
	a->auth = NULL;
	for (i = 0; i < nhdr; i++)
		a->hdr[i] = pstrdup(hdr[i]);
	/* the last header is the session's (abm.c) */
	a->auth = (char *) a->hdr[nhdr - 1];
	a->wipe.func = ahead_wipe;
	a->wipe.arg = a;
	MemoryContextRegisterResetCallback(cxt, &a->wipe);
	MemoryContextSwitchTo(old);

	/* after the last one of the same or an earlier order */
	dlist_reverse_foreach(it, &run->queue)
	{
		Ahead	   *b = dlist_container(Ahead, node, it.cur);

		if (b->order <= order)
		{
			dlist_insert_after(&b->node, &a->node);
			return;
		}
	}
	dlist_push_head(&run->queue, &a->node);
}

/*
 * A request sent ahead was answered (called from inside http.c's turn of
 * the pool: it may queue and send, never wait).  A complete 200 answer to a
 * page may tell which page comes next: sync.c's next() says, and it is
 * queued with the same token and session.
 */
static void
on_done(AdeHttp *http, void *arg)
{
	Ahead	   *a = (Ahead *) AdeHttpOwner(http);
	const char *body;
	size_t		len;
	long		status;
	char	   *next_path = NULL;
	char	   *next_body;
	MemoryContext tmp;
	MemoryContext old;

	if (run == NULL || a == NULL)
		return;
	run->inflight--;
	run->answered++;
	status = AdeHttpPeek(http, &body, &len);
	if (status == 200 && run->next)
	{
		tmp = AllocSetContextCreate(run->cxt, "ade next page", ALLOCSET_DEFAULT_SIZES);
		old = MemoryContextSwitchTo(tmp);
		next_body = run->next(a->path, a->body, body, len, &next_path);
		if (next_body)
			queue(a->token_id, a->order, a->method, a->base, next_path, next_body, a->hdr, a->nhdr);
		MemoryContextSwitchTo(old);
		MemoryContextDelete(tmp);
	}
	fill();
}

/* the run's end, however it ends: everything sent ahead is let go */
static void
ahead_release(void *arg)
{
	if (run == (AheadRun *) arg)
		run = NULL;
}

/*
 * A run's requests ahead, in the current memory context, which must outlive
 * the run's commits; next() predicts the page after an answer.  The run's
 * pool of connections (http.c) starts with it.
 */
void
AdeAheadBegin(int max_concurrent, TimestampTz deadline, AdeAheadNext next)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "ade requests ahead",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	AheadRun   *r = palloc0(sizeof(AheadRun));

	r->cxt = cxt;
	dlist_init(&r->queue);
	r->max = Max(max_concurrent, 1);
	r->deadline = deadline;
	r->next = next;
	r->cb.func = ahead_release;
	r->cb.arg = r;
	MemoryContextRegisterResetCallback(cxt, &r->cb);
	/* the pool is a child: its transfers go before the requests' contexts */
	AdeHttpPoolBegin(r->max, on_done, NULL);
	MemoryContextSwitchTo(old);
	run = r;
}

void
AdeAheadEnd(int *sent, int *wasted)
{
	if (run == NULL)
		return;
	if (sent)
		*sent = run->sent;
	if (wasted)
		*wasted = run->wasted + run->answered + run->inflight;
	AdeHttpPoolEnd();
	MemoryContextDelete(run->cxt);	/* clears run */
}

/* queue the request a token is expected to make first (abm.c builds it) */
void
AdeAheadQueue(int64 token_id, int order, const char *method, const char *base,
			  const char *path, const char *body, const char *const *hdr, int nhdr)
{
	if (run == NULL || nhdr < 1)
		return;
	queue(token_id, order, method, base, path, body, hdr, nhdr);
	fill();
}

/* everything sent ahead for a token goes: its turn is over, or it went another way */
void
AdeAheadDrop(int64 token_id)
{
	dlist_mutable_iter it;

	if (run == NULL)
		return;
	dlist_foreach_modify(it, &run->queue)
	{
		Ahead	   *a = dlist_container(Ahead, node, it.cur);

		if (a->token_id == token_id)
		{
			run->wasted++;
			ahead_free(a);
		}
	}
	fill();
}

/*
 * The answer to exactly this request, if it was sent ahead and is still in
 * flight or answered: waited for at most timeout_ms (what the loop would
 * give the request: its share of the run's time, ade.http_timeout), then
 * handed over in res (in the current memory context) and true, whatever
 * came (a transport failure too).  Not answered by then: a timeout in res,
 * as the loop's own request would have had.  False when it was not sent
 * ahead (one still queued is not sent now: the loop sends it on its own
 * connection); a token whose next request ahead is another one loses all
 * it had ahead.
 */
bool
AdeAheadTake(int64 token_id, const char *method, const char *path, const char *body,
			 const char *auth, long timeout_ms, AdeHttpResult *res)
{
	dlist_iter	it;
	Ahead	   *a = NULL;

	if (run == NULL)
		return false;
	dlist_foreach(it, &run->queue)
	{
		Ahead	   *b = dlist_container(Ahead, node, it.cur);

		if (b->token_id == token_id)
		{
			a = b;
			break;
		}
	}
	if (a == NULL)
		return false;
	if (a->http == NULL ||
		strcmp(a->method, method) != 0 || strcmp(a->path, path) != 0 ||
		(a->body == NULL) != (body == NULL) ||
		(body != NULL && strcmp(a->body, body) != 0) ||
		auth == NULL || strcmp(a->auth, auth) != 0)
	{
		AdeAheadDrop(token_id);
		return false;
	}
	if (!AdeHttpWaitUntil(a->http, TimestampTzPlusMilliseconds(GetCurrentTimestamp(), Max(timeout_ms, 1))))
	{
		/* no answer within the loop's own limit: as if its request timed out */
		memset(res, 0, sizeof(*res));
		res->retry_after = -1;
		res->curl_code = 28;	/* CURLE_OPERATION_TIMEDOUT */
		res->timed_out = true;
		res->connected = true;
		res->curl_error = pstrdup("Operation timed out");
		res->body = pstrdup("");
		AdeAheadDrop(token_id);
		return true;
	}
	AdeHttpFinish(a->http, res);
	ahead_free(a);
	fill();
	return true;
}
