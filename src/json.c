/*-------------------------------------------------------------------------
 *
 * json.c
 *		ABM's answers (and the decrypted token) as jsonb, and the members
 *		the C code reads from them.
 *
 * Owns: the one parse of an answer body.  Before jsonb_in sees it, the body
 * must be valid UTF-8 and hold at most ABM_MAX_JSON_VALUES values (parsing
 * costs memory per value, so a small body of empty objects could take
 * gigabytes); escapes jsonb cannot store (U+0000, lone surrogates) become
 * U+FFFD, so that one odd record cannot fail a page run after run.  A syntax
 * error becomes ade's own message naming the request; for JSON that holds a
 * secret, without the parser's detail, which would quote it.  Any other
 * error (a cancel among them) goes through unchanged.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/json.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "ade.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

/*
 * ABM's answer as jsonb, or a clear error naming the request.  One parse:
 * jsonb_in's own syntax error is turned into ours (that error code only;
 * anything else, a cancel among them, goes through unchanged).
 */
Jsonb *
AdeAbmParseJson(const AdeAbmResponse *resp, const char *what)
{
	return AdeAbmParseSecretJson(resp, what, false);
}

/* the value of the four hex digits at p, or -1 */
static int
hex4(const char *p)
{
	int			v = 0;
	int			i;

	for (i = 0; i < 4; i++)
	{
		int			c = (unsigned char) p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

/*
 * jsonb cannot hold U+0000 nor a lone UTF-16 surrogate, and one such escape
 * in a page would fail it run after run: each "\u0000", and each "\uD8xx"
 * or "\uDCxx" that is not half of a pair, becomes "\ufffd" (the
 * replacement character, the same length), in a copy.  Escapes are walked
 * in order, so an escaped backslash followed by "u0000" is left alone.
 */
static const char *
without_bad_escapes(const char *body, size_t len)
{
	char	   *copy = NULL;
	size_t		i;

	if (strstr(body, "\\u") == NULL)	/* body ends in NUL, has none before */
		return body;
	for (i = 0; i + 1 < len; i++)
	{
		int			v;
		bool		bad;

		if (body[i] != '\\')
			continue;
		if (body[i + 1] != 'u' || i + 6 > len || (v = hex4(body + i + 2)) < 0)
		{
			i++;				/* the escaped character */
			continue;
		}
		bad = v == 0 || (v >= 0xDC00 && v <= 0xDFFF);
		if (v >= 0xD800 && v <= 0xDBFF)
		{
			int			lo = (i + 12 <= len && body[i + 6] == '\\' && body[i + 7] == 'u')
				? hex4(body + i + 8) : -1;

			if (lo >= 0xDC00 && lo <= 0xDFFF)
			{
				i += 11;		/* a pair: both escapes */
				continue;
			}
			bad = true;
		}
		if (bad)
		{
			if (copy == NULL)
				copy = pnstrdup(body, len);
			memcpy(copy + i + 2, "fffd", 4);
		}
		i += 5;
	}
	return copy ? copy : body;
}

/*
 * How many values the JSON text holds, about (objects, arrays and commas
 * outside strings): parsing costs memory per value, about a hundred times
 * the bytes of "{}," -- a 9 MB answer of three million empty objects would
 * take gigabytes.  A page of 1000 devices has some 30,000.
 */
#define ABM_MAX_JSON_VALUES 250000

static long
json_values(const char *p, size_t len)
{
	long		n = 0;
	bool		in_str = false;
	size_t		i;

	for (i = 0; i < len; i++)
	{
		char		c = p[i];

		if (in_str)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = false;
		}
		else if (c == '"')
			in_str = true;
		else if (c == '{' || c == '[' || c == ',')
			n++;
	}
	return n;
}

/*
 * The same, for JSON that holds a secret (the decrypted token, the answer
 * of GET /session): the parser's own detail quotes the text it choked on,
 * so the error carries none.
 */
Jsonb *
AdeAbmParseSecretJson(const AdeAbmResponse *resp, const char *what, bool secret)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile Datum result = (Datum) 0;
	ErrorData  *volatile edata = NULL;

	if (pg_verifymbstr(resp->body, (int) resp->len, true) == false)
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("ABM answered %s with a body that is not valid UTF-8", what)));
	if (json_values(resp->body, resp->len) > ABM_MAX_JSON_VALUES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("ABM answered %s with JSON of more than %d values", what, ABM_MAX_JSON_VALUES),
				 errdetail("A page of 1000 devices holds about 30,000; the answer is refused before it is parsed (%zu bytes).",
						   resp->len)));
	PG_TRY();
	{
		result = DirectFunctionCall1(jsonb_in,
									 CStringGetDatum(without_bad_escapes(resp->body, resp->len)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_INVALID_TEXT_REPRESENTATION)
			PG_RE_THROW();
		FlushErrorState();
	}
	PG_END_TRY();
	if (edata != NULL && secret)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("%s is not valid JSON", what),
				 errdetail("%zu bytes; the parser's detail is not shown, as it would quote a secret.", resp->len)));
	if (edata != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("ABM answered %s with invalid JSON", what),
				 errdetail("%s (%zu bytes received).",
						   edata->detail ? edata->detail : edata->message, resp->len)));
	return DatumGetJsonbP(result);
}

static JsonbValue *
json_get(Jsonb *jb, const char *key)
{
	JsonbValue	k;

	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		return NULL;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
}

/* a string member, or NULL when absent or JSON null */
char *
AdeJsonGetText(Jsonb *jb, const char *key)
{
	JsonbValue *v = json_get(jb, key);

	if (v == NULL || v->type == jbvNull)
		return NULL;
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	if (v->type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	if (v->type == jbvBool)
		return pstrdup(v->val.boolean ? "true" : "false");
	return NULL;
}

bool
AdeJsonGetBool(Jsonb *jb, const char *key, bool dflt)
{
	JsonbValue *v = json_get(jb, key);

	if (v == NULL || v->type != jbvBool)
		return dflt;
	return v->val.boolean;
}

Jsonb *
AdeJsonGetJsonb(Jsonb *jb, const char *key)
{
	JsonbValue *v = json_get(jb, key);

	if (v == NULL)
		return NULL;
	return JsonbValueToJsonb(v);
}

/*
 * The top-level "cursor" and "more_to_follow" of a page of devices, read
 * by a scan of the body that builds nothing else (to send the next page's
 * request while this one waits to be applied: ahead.c).  False when the
 * body is no JSON object or has no cursor; never raises but on out of
 * memory.  What it reads is a guess only: the page is parsed in full when
 * it is applied, and a request that differs is sent again.
 */
typedef struct PageScan
{
	int			field;			/* 1 cursor, 2 more_to_follow, 0 other */
	char	   *cursor;
	bool		more;
	JsonLexContext *lex;
} PageScan;

static void
scan_field(void *state, char *fname, bool isnull)
{
	PageScan   *ps = (PageScan *) state;

	ps->field = 0;
	if (ps->lex->lex_level == 1 && fname)
		ps->field = strcmp(fname, "cursor") == 0 ? 1 :
			strcmp(fname, "more_to_follow") == 0 ? 2 : 0;
}

static void
scan_scalar(void *state, char *token, JsonTokenType type)
{
	PageScan   *ps = (PageScan *) state;

	if (ps->lex->lex_level != 1 || ps->field == 0)
		return;
	if (ps->field == 1 && type == JSON_TOKEN_STRING && token)
		ps->cursor = pstrdup(token);
	else if (ps->field == 2)
		ps->more = type == JSON_TOKEN_TRUE;
	ps->field = 0;
}

bool
AdeJsonPageCursor(const char *body, size_t len, char **cursor, bool *more)
{
	PageScan	ps = {0};
	JsonSemAction sem = {0};
	JsonLexContext *lex;

	*cursor = NULL;
	*more = false;
	if (len == 0 || len > (size_t) INT_MAX)
		return false;
	lex = makeJsonLexContextCstringLen((char *) body, (int) len, PG_UTF8, true);
	ps.lex = lex;
	sem.semstate = &ps;
	sem.object_field_start = scan_field;
	sem.scalar = scan_scalar;
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS || ps.cursor == NULL || ps.cursor[0] == '\0')
		return false;
	*cursor = ps.cursor;
	*more = ps.more;
	return true;
}
