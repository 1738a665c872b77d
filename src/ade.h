/*-------------------------------------------------------------------------
 *
 * ade.h
 *		Declarations shared by the files of the ade extension.
 *
 * Each .c file owns one concern and exports module-prefixed CamelCase
 * functions (AdeHttp*, AdeAbm*, AdeOAuth*, AdeToken*); this header is the
 * whole of what they say to each other.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/ade.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ADE_H
#define ADE_H

#include "postgres.h"
#include "datatype/timestamp.h"
#include "utils/jsonb.h"

/* ADE_VERSION comes from the Makefile: ade.control's default_version */
#ifndef ADE_VERSION
#error "build with make: ADE_VERSION is set from ade.control"
#endif
#define ADE_USER_AGENT "pg-ade/" ADE_VERSION

/* ---- settings (ade.c) ---- */
extern char *ade_abm_url;
extern char *ade_enroll_url;
extern int	ade_http_timeout;
extern int	ade_connect_timeout;
extern int	ade_page_size;
extern int	ade_max_sync_seconds;
extern int	ade_failed_retry_interval;
extern int	ade_max_response_bytes;
extern char *ade_ca_file;
extern int	ade_runs_retention;
extern char *ade_proxy;
extern int	ade_max_retries;
extern int	ade_retry_backoff;
extern int	ade_max_retry_wait;
extern int	ade_max_concurrent_requests;
extern int	ade_reconcile_interval;
extern bool ade_replicate_key;
extern int	ade_min_refetch_interval;
extern char *ade_abm_api_url;
extern char *ade_abm_token_url;
extern int	ade_inventory_interval;
extern int	ade_applecare_per_run;
extern bool ade_allow_drop;

extern bool AdeUrlAllowed(const char *url, char **why);
extern const char *AdeAbmBaseUrl(void);
extern void AdeRefuseOnStandby(const char *what);
extern const char *AdeSchema(void);
extern Oid	AdeSchemaOid(void);
extern Oid	AdeExtensionOwner(void);
extern bool AdeSqlAtLeast(int major, int minor);
extern void AdeRunCacheBegin(void);
extern void AdeRunCacheEnd(void);

/* ---- HTTP transport (http.c) ---- */
typedef struct AdeHttp AdeHttp;
typedef struct AdeHttpPool AdeHttpPool;

/* the longest pause a Retry-After can ask for; a longer one is bounded */
#define ADE_MAX_RETRY_AFTER 86400

typedef struct AdeHttpResult
{
	long		status;			/* HTTP status */
	char	   *body;			/* palloc'd, NUL-terminated */
	size_t		len;
	char	   *session_header; /* X-ADM-Auth-Session of the answer, or NULL */
	int			retry_after;	/* Retry-After in seconds, -1 if none */
	bool		retry_after_bounded;	/* it asked for more than ADE_MAX_RETRY_AFTER */
	int			curl_code;		/* 0 = a complete answer arrived */
	char	   *curl_error;		/* set when curl_code != 0 */
	bool		timed_out;
	bool		connected;		/* the connection was made (a timeout came later) */
} AdeHttpResult;

extern AdeHttp *AdeHttpCreate(void);
extern void AdeHttpDestroy(AdeHttp *http);
extern void AdeHttpPerform(AdeHttp *http, const char *method, const char *url,
						   const char *const *headers, int nheaders,
						   const char *body, long timeout_ms, long connect_timeout_ms,
						   AdeHttpResult *res);
extern void AdeHttpStart(AdeHttp *http, const char *method, const char *url,
						 const char *const *headers, int nheaders,
						 const char *body, long timeout_ms, long connect_timeout_ms);
extern void AdeHttpWait(AdeHttp *http);
extern bool AdeHttpWaitUntil(AdeHttp *http, TimestampTz until);
extern void AdeHttpFinish(AdeHttp *http, AdeHttpResult *res);
extern bool AdeHttpDone(AdeHttp *http);
extern long AdeHttpPeek(AdeHttp *http, const char **body, size_t *len);
extern void AdeHttpSetOwner(AdeHttp *http, void *owner);
extern void *AdeHttpOwner(AdeHttp *http);
extern void AdeHttpPoolBegin(int max_connections, void (*on_done) (AdeHttp *, void *), void *arg);
extern void AdeHttpPoolEnd(void);
extern void AdeHttpPump(void);

/* ---- requests of a run sent ahead (ahead.c) ---- */

/* the path and body of the request after this answer to (path, request), or NULL */
typedef char *(*AdeAheadNext) (const char *path, const char *request, const char *body,
							   size_t len, char **next_path);

extern void AdeAheadBegin(int max_concurrent, TimestampTz deadline, AdeAheadNext next);
extern void AdeAheadEnd(int *sent, int *wasted);
extern void AdeAheadQueue(int64 token_id, int order, const char *method, const char *base,
						  const char *path, const char *body, const char *const *hdr, int nhdr);
extern void AdeAheadDrop(int64 token_id);
extern bool AdeAheadTake(int64 token_id, const char *method, const char *path, const char *body,
						 const char *auth, long timeout_ms, AdeHttpResult *res);

/* ---- OAuth 1.0a (oauth.c) ---- */
extern char *AdeOAuthEncode(const char *s);
extern char *AdeOAuthSignature(const char *method, const char *url,
							   const char *consumer_key, const char *consumer_secret,
							   const char *token, const char *token_secret,
							   int64 timestamp, const char *nonce);
extern char *AdeOAuthHeader(const char *method, const char *url,
							const char *consumer_key, const char *consumer_secret,
							const char *token, const char *token_secret);

/* ---- ABM web service (abm.c) ---- */
typedef enum AdeAbmKind
{
	ABM_OK,
	ABM_EXPIRED_CURSOR,
	ABM_INVALID_CURSOR,
	ABM_EXHAUSTED_CURSOR,
	ABM_CURSOR_REQUIRED,
	ABM_TERMS_NOT_SIGNED,
	ABM_TOKEN_REJECTED,
	ABM_UNAUTHORIZED,
	ABM_THROTTLED,
	ABM_SERVER_ERROR,
	ABM_UNKNOWN_PROFILE,		/* a 400: ABM does not know the profile UUID sent */
	ABM_DEADLINE,				/* the run's time budget ran out: not a failure */
	ABM_PAUSED,					/* not sent: ABM asked for a pause (Retry-After) */
	ABM_OTHER
} AdeAbmKind;

typedef struct AdeAbmCreds
{
	char	   *consumer_key;
	char	   *consumer_secret;
	char	   *access_token;
	char	   *access_secret;
} AdeAbmCreds;

/* a pause ABM asked for (429 or 503 with Retry-After), of one kind of request */
typedef struct AdeAbmPause
{
	char		kind[32];		/* AdeAbmRequestKind() */
	TimestampTz until;
	int			status;			/* the answer that asked (0: loaded) */
	int			retry_after;
	bool		unsaved;		/* asked in this run: AdeAbmSavePauses() stores it */
} AdeAbmPause;

typedef struct AdeAbmClient
{
	int64		token_id;		/* 0 while the token is not stored yet */
	AdeAbmCreds creds;
	char	   *session;		/* current X-ADM-Auth-Session, or NULL */
	bool		session_dirty;	/* changed since loaded: persist it */
	int			requests;		/* HTTP requests sent */
	TimestampTz deadline;		/* no request runs past it (0: none) */
	bool		once;			/* requests not safe to send twice: no resend
								 * after they reached ABM (a 5xx, a lost answer) */
	bool		unsure;			/* such a request reached ABM and got no answer
								 * that says it was not done */
	AdeAbmPause pauses[16];
	int			npauses;
	AdeHttp    *http;
	MemoryContext cxt;			/* where the client lives (the session too) */
	MemoryContextCallback wipe; /* wipes the credentials when cxt goes */
} AdeAbmClient;

typedef struct AdeAbmResponse
{
	long		status;
	AdeAbmKind	kind;
	char	   *body;
	size_t		len;
	int			retry_after;
	int			retries;		/* how many times it was sent again */
} AdeAbmResponse;

/* what the last ABM error was, for the sync to set token flags */
extern AdeAbmKind AdeAbmLastErrorKind;
extern int	AdeAbmLastRetryAfter;

extern void AdeAbmRaiseDeadline(const char *what) pg_attribute_noreturn();

extern AdeAbmClient *AdeAbmOpen(int64 token_id);
extern AdeAbmClient *AdeAbmOpenCreds(const AdeAbmCreds *creds);
extern void AdeAbmWipeCreds(AdeAbmCreds *creds);
extern void AdeAbmClose(AdeAbmClient *client);
extern void AdeAbmCall(AdeAbmClient *client, const char *method, const char *path,
					   const char *body, AdeAbmResponse *resp);
extern void AdeAbmRaise(const AdeAbmResponse *resp, const char *what) pg_attribute_noreturn();
extern char *AdeAbmExcerpt(const char *body);
extern void AdeSleep(int ms);
extern void AdeAbmSaveSession(AdeAbmClient *client);
/* ---- ABM's pauses (pause.c) ---- */
extern const char *AdeAbmRequestKind(const char *method, const char *path);
extern void AdePauseNote(AdeAbmClient *c, const char *kind, TimestampTz until, int status,
						 int retry_after, bool is_new);
extern TimestampTz AdePausedUntil(AdeAbmClient *c, const char *kind);
extern void AdePauseRefuse(AdeAbmClient *client, const char *what, const char *kind,
						   TimestampTz until) pg_attribute_noreturn();
extern bool AdeAbmPaused(AdeAbmClient *client, const char *method, const char *path);
extern void AdeAbmSavePauses(AdeAbmClient *client);
extern void AdeAbmAhead(int64 token_id, const char *session, int order, const char *method,
						const char *path, const char *body);
extern Jsonb *AdeAbmFetchAccount(AdeAbmClient *client);
extern void AdeAbmStoreAccount(int64 token_id, Jsonb *account);
extern void AdeAbmUpdateAccount(AdeAbmClient *client, int64 token_id);
extern AdeAbmKind AdeAbmClassify(long status, const char *body);
extern const char *AdeAbmKindName(AdeAbmKind kind);

/* ---- answers as jsonb (json.c) ---- */
extern Jsonb *AdeAbmParseJson(const AdeAbmResponse *resp, const char *what);
extern Jsonb *AdeAbmParseSecretJson(const AdeAbmResponse *resp, const char *what, bool secret);
extern char *AdeJsonGetText(Jsonb *jb, const char *key);
extern bool AdeJsonGetBool(Jsonb *jb, const char *key, bool dflt);
extern Jsonb *AdeJsonGetJsonb(Jsonb *jb, const char *key);
extern bool AdeJsonPageCursor(const char *body, size_t len, char **cursor, bool *more);

/* ---- token envelope and key pair (token.c) ---- */
typedef struct AdeTokenFile
{
	AdeAbmCreds creds;
	char	   *expiry;			/* access_token_expiry as sent */
} AdeTokenFile;

extern void AdeTokenDecrypt(const char *data, size_t len, AdeTokenFile *out);

/* ---- secrets at rest (vault.c) ---- */
#define ADE_KEK_LEN 32			/* the key-encryption key, ade_kek.key */
extern void AdeVaultRestoreKek(const unsigned char *key, bool proven);

/* ---- the key-encryption key on every node (kekwal.c) ---- */
extern void AdeKekWalRegister(void);
extern bool AdeKekWalLog(const unsigned char *key, bool proven);
extern bool AdeKekWalRegistered(void);

extern char *AdeVaultPlace(const char *table, const char *column, int64 row);
extern char *AdeVaultSeal(const char *plain, const char *place);
extern char *AdeVaultOpen(const char *sealed, const char *place);
extern char *AdeVaultTryOpen(const char *sealed, const char *place);

/* ---- profile assignment (assign.c) ---- */
typedef struct AdeAssignResult
{
	int			assigned;
	int			failed;
	char	   *note;			/* why something waits, or NULL */
	ErrorData  *error;			/* the first failure, or NULL */
	AdeAbmKind	error_kind;
	bool		out_of_time;	/* stopped by the deadline: the rest waits */
} AdeAssignResult;

extern void AdeAssignProfiles(AdeAbmClient *client, int64 token_id, bool count_waiting,
							  TimestampTz deadline, AdeAssignResult *out);

/* ---- the sync loop (sync.c) ---- */

/* ---- the run lock and a token's claim (claim.c) ---- */
extern bool AdeRunLock(bool session);
extern void AdeRunLockWait(const char *what);
extern void AdeRunUnlock(void);
extern char *AdeRunLockHolder(bool *prepared);
extern bool AdeClaimToken(int64 token_id, bool hosts);
extern bool AdeTokenLive(int64 token_id);

/* ---- HTTP (http.c) ---- */
extern char *AdeRedact(const char *text);

/* ---- sharing hosts with the application (coexist.c) ---- */
extern TimestampTz AdeLockDeadline;
extern void AdeLockHosts(void);

/* ---- saved plans (plans.c) ---- */
extern int	AdeExec(const char *fmt, int nargs, Oid *types, Datum *args, const char *nulls,
					bool read_only, long count);

/* ---- subtransactions (subxact.c) ---- */
extern bool AdeCommitSteps;
extern void AdePinSearchPath(void);
extern void AdeCommit(void);
extern bool AdeTrySubxact(void (*step) (void *), void *arg, ErrorData **error,
						  AdeAbmKind *kind);

/* ---- the Business/School Manager API's client assertion (apijwt.c) ---- */
/* ---- the Business/School Manager API (api.c) ---- */
extern int	AdeApiAccounts(void);
extern void AdeApiRun(TimestampTz deadline);

#define ADE_API_ASSERTION_MAX_SECONDS INT64CONST(15552000)	/* Apple: exp - iat < 180 days */
extern void AdeApiKeyCheck(const char *pem, int pem_len);
extern char *AdeClientAssertion(const char *client_id, const char *key_id,
								const char *pem, int pem_len,
								int64 iat, int64 exp, const char *jti);

#endif							/* ADE_H */
