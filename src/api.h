/*-------------------------------------------------------------------------
 *
 * api.h
 *		What src/api.c (the client of the Business/School Manager API) gives
 *		src/inventory.c (the steps that read and move the organisation's
 *		devices): the client, an answer, and the requests.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/api.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ADE_API_H
#define ADE_API_H

#include "fmgr.h"
#include "utils/timestamp.h"

typedef struct ApiClient
{
	int64		account_id;		/* 0: not stored yet (ade_add_api_account) */
	char	   *client_id;
	char	   *key_id;
	char	   *scope;
	char	   *pem;			/* wiped when cxt goes */
	int			pem_len;
	char	   *token;			/* wiped when cxt goes */
	TimestampTz token_until;
	bool		token_new;		/* fetched here, not stored yet */
	TimestampTz not_before;		/* ABM asked to wait: nothing sent before */
	TimestampTz deadline;		/* the run's share; 0: the settings only */
	struct AdeHttp *http;
	MemoryContext cxt;
	MemoryContextCallback wipe;
} ApiClient;

typedef struct ApiAnswer
{
	long		status;			/* 0: no answer (a broken connection) */
	char	   *body;
	size_t		len;
	bool		paused;			/* ABM asked to wait: not_before stored */
	bool		unsure;			/* a POST that may have been done */
} ApiAnswer;

extern ApiClient *ApiClientOpen(int64 account_id);
extern void ApiClientClose(ApiClient *c);
extern void ApiRequest(ApiClient *c, const char *method, const char *path, const char *body, ApiAnswer *ans);
extern void ApiRaise(const ApiAnswer *ans, const char *what) pg_attribute_noreturn();
extern void ApiStoreToken(ApiClient *c);
extern char *ApiErrorWords(const char *body);
extern void ApiSpiCheck(int rc, int want, const char *what);
extern void ApiNotNull(FunctionCallInfo fcinfo, int arg, const char *name, const char *fn);

#endif							/* ADE_API_H */
