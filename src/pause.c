/*-------------------------------------------------------------------------
 *
 * pause.c
 *		The pauses ABM asks for: a 429 or 503 with a Retry-After that a run
 *		does not wait out stops that token's requests of that kind until then.
 *
 * Owns: the kinds of request a pause holds for (AdeAbmRequestKind), the
 * pauses a client knows (loaded with the token by AdeAbmOpen(), noted by
 * abm.c when an answer asks for one), their storage in ade_rate_limits
 * (AdeAbmSavePauses(), through ade_pause()), and the refusal of a request
 * of a paused kind, which is sent to nobody.  Stored, not in memory: every
 * run and backend keeps them (pg_cron starts a new backend every minute).
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/pause.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "ade.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

/*
 * The kind of a request, as ade_rate_limits names it: a pause ABM asks for
 * holds for the token's requests of that kind only.
 */
const char *
AdeAbmRequestKind(const char *method, const char *path)
{
	static const struct
	{
		const char *method;
		const char *path;
		const char *kind;
	}			kinds[] =
	{
		{"GET", "/session", "session"},
		{"GET", "/account", "account"},
		{"POST", "/server/devices", "fetch"},
		{"POST", "/devices/sync", "sync"},
		{"POST", "/profile", "define"},
		{"PUT", "/profile/devices", "assign"},
		{"GET", "/profile", "profile"},
		{"DELETE", "/profile/devices", "remove_profile"},
		{"POST", "/devices", "details"},
		{"POST", "/devices/disown", "disown"},
		{"POST", "/device/activationlock", "activation_lock"},
	};
	const char *q = strchr(path, '?');
	size_t		pl = q ? (size_t) (q - path) : strlen(path);
	int			i;

	for (i = 0; i < (int) lengthof(kinds); i++)
		if (strcmp(method, kinds[i].method) == 0 &&
			strlen(kinds[i].path) == pl && strncmp(path, kinds[i].path, pl) == 0)
			return kinds[i].kind;
	return psprintf("%s %.*s", method, (int) pl, path);
}

/* remember a pause on the client; a new one (status set) is also to be stored */
void
AdePauseNote(AdeAbmClient *c, const char *kind, TimestampTz until, int status,
			   int retry_after, bool is_new)
{
	AdeAbmPause *p = NULL;
	int			i;

	for (i = 0; i < c->npauses; i++)
		if (strcmp(c->pauses[i].kind, kind) == 0)
			p = &c->pauses[i];
	if (p == NULL)
	{
		if (c->npauses >= (int) lengthof(c->pauses))
			return;				/* more kinds than ABM has: not kept */
		p = &c->pauses[c->npauses++];
		strlcpy(p->kind, kind, sizeof(p->kind));
	}
	p->until = until;
	p->status = status;
	p->retry_after = retry_after;
	p->unsaved = p->unsaved || is_new;
}

/* the end of the pause that holds this kind of request, or 0 */
TimestampTz
AdePausedUntil(AdeAbmClient *c, const char *kind)
{
	int			i;

	for (i = 0; i < c->npauses; i++)
		if (strcmp(c->pauses[i].kind, kind) == 0 && c->pauses[i].until > GetCurrentTimestamp())
			return c->pauses[i].until;
	return 0;
}

/* is this kind of request paused for the token? (for the sync's plans) */
bool
AdeAbmPaused(AdeAbmClient *client, const char *method, const char *path)
{
	return AdePausedUntil(client, AdeAbmRequestKind(method, path)) != 0;
}

/*
 * Store the pauses ABM asked for in this client's requests (SPI connected),
 * so that every run and backend keeps them; in a step that is not rolled
 * back with the request that got the answer.
 */
void
AdeAbmSavePauses(AdeAbmClient *client)
{
	Oid			argtypes[5] = {INT8OID, TEXTOID, TIMESTAMPTZOID, INT4OID, INT4OID};
	int			i;

	if (client->token_id == 0 || !AdeSqlAtLeast(0, 5))
		return;
	for (i = 0; i < client->npauses; i++)
	{
		AdeAbmPause *p = &client->pauses[i];
		Datum		args[5];
		int			rc;

		if (!p->unsaved)
			continue;
		args[0] = Int64GetDatum(client->token_id);
		args[1] = CStringGetTextDatum(p->kind);
		args[2] = TimestampTzGetDatum(p->until);
		args[3] = Int32GetDatum(p->status);
		args[4] = Int32GetDatum(p->retry_after);
		rc = AdeExec("SELECT %s.ade_pause($1, $2, $3, $4, $5)",
								   5, argtypes, args, NULL, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
		p->unsaved = false;
	}
}

/* a request of a paused kind is not sent: an error of its own class */
void
AdePauseRefuse(AdeAbmClient *client, const char *what, const char *kind, TimestampTz until)
{
	AdeAbmLastErrorKind = ABM_PAUSED;
	AdeAbmLastRetryAfter = (int) ((until - GetCurrentTimestamp()) / USECS_PER_SEC) + 1;
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("ABM asked ade to wait until %s before its next %s request (%s): not sent",
					timestamptz_to_str(until), kind, what),
			 errdetail("ABM answered an earlier %s request with HTTP 429 or 503 and a Retry-After; "
					   "the other tokens, and this token's other requests, go on.", kind),
			 errhint("ade_rate_limits and ade_status.paused show it; it ends by itself.")));
}
