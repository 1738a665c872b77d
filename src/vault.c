/*-------------------------------------------------------------------------
 *
 * vault.c
 *		Encryption at rest of the secrets ade stores: the private key, the
 *		token secrets and the ABM session tokens.
 *
 * Owns: the key-encryption key file, the data keys (ade_secret_keys), and
 * AES-256-GCM sealing of single values bound to where they are stored.  It
 * does not know which columns hold secrets: token.c and abm.c seal what they
 * store and open what they read, naming the place (AdeVaultPlace).
 *
 * Design notes (envelope encryption, as Supabase Vault and pgsodium do):
 *
 * - One key-encryption key (KEK), 32 random bytes in the file ade_kek.key
 *   of the data directory (mode 0600), made once on first use and never
 *   changed.  It is outside the tables, so that pg_dump alone does not hand
 *   over a working ABM token; it goes to a standby with the base backup, and
 *   to a new server by copying that one file once.  A setting would not do:
 *   current_setting() shows a placeholder's value to anyone before the
 *   library loads.
 * - Data keys, 32 random bytes each, live in the table ade_secret_keys,
 *   sealed with the KEK; one of them is current.  ade_rotate_secret_key()
 *   makes a new one and re-seals every stored secret with it, in the
 *   caller's transaction: the new key replicates with the data, so that a
 *   standby promoted after a rotation opens everything, and a rotation
 *   needs no file copied.
 * - A sealed value is "ade2:" <key id> ":" base64(nonce[12] || ciphertext ||
 *   tag[16]), with the place it is stored ("<table>.<column>:<row id>") as
 *   associated data: a ciphertext copied to another row or column does not
 *   open.  Values of 0.3 ("ade1:", a key file per key, no associated data)
 *   still open, read-only, until ade_vault_upgrade() (the 0.3 to 0.4
 *   upgrade) or a rotation re-seals them.
 * - Files are made durably: written to a temporary name opened with
 *   O_CREAT | O_EXCL, fsynced, linked into place (never overwriting), and the
 *   data directory fsynced, so that after an OS crash committed rows never
 *   name a key whose file is gone.  What a crash leaves of a temporary
 *   file is removed at CREATE EXTENSION and as a standby replays the KEK.
 * - The KEK and unwrapped data keys are kept for one transaction at most:
 *   wiped (explicit_bzero) when it ends, however it ends, so that an idle
 *   backend holds none, whatever it did before.  Key material on the stack
 *   is wiped too, and OpenSSL cipher contexts are freed (which cleanses
 *   them) before any ERROR is raised.  ade_secret_status(), which
 *   ade_reader calls through ade_status, reads no key: it looks at the
 *   file.  No message carries key material or a secret.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/vault.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/evp.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "ade.h"
#include "catalog/pg_type.h"
#include "common/base64.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(ade_rotate_secret_key);
PG_FUNCTION_INFO_V1(ade_vault_upgrade);
PG_FUNCTION_INFO_V1(ade_secret_status);
PG_FUNCTION_INFO_V1(ade_vault_init);

#define KEY_LEN ADE_KEK_LEN
#define NONCE_LEN 12
#define TAG_LEN 16
#define ID_LEN 8
#define PREFIX "ade2:"
#define LEGACY_PREFIX "ade1:"
#define KEK_FILE "ade_kek.key"

/* the data keys this backend has unwrapped, by id */
typedef struct VaultKey
{
	char		id[ID_LEN + 1];
	unsigned char key[KEY_LEN];
} VaultKey;

static VaultKey keys[8];
static int	nkeys = 0;

static bool kek_loaded = false;
static bool kek_logged = false; /* this backend logged the KEK as proven */
static unsigned char kek[KEY_LEN];
static bool wipe_registered = false;

/* at the end of every transaction that loaded a key: none stays in memory */
static void
wipe_keys(XactEvent event, void *arg)
{
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	if (kek_loaded || nkeys > 0)
	{
		explicit_bzero(kek, sizeof(kek));
		explicit_bzero(keys, sizeof(keys));
		kek_loaded = false;
		nkeys = 0;
	}
}

static void
keys_for_this_transaction(void)
{
	if (!wipe_registered)
	{
		RegisterXactCallback(wipe_keys, NULL);
		wipe_registered = true;
	}
}

static bool
valid_id(const char *id)
{
	int			i;

	for (i = 0; i < ID_LEN; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
			return false;
	return id[ID_LEN] == '\0';
}

/* ---- files ---- */

/* read exactly len bytes of a file of the data directory; false if it does not exist */
static bool
read_file(const char *path, unsigned char *buf, size_t len)
{
	int			fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	ssize_t		n;

	if (fd < 0)
	{
		if (errno == ENOENT)
			return false;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open ade key file \"%s\": %m", path)));
	}
	n = read(fd, buf, len);
	CloseTransientFile(fd);
	if (n != (ssize_t) len)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("ade key file \"%s\" is damaged", path)));
	return true;
}

/*
 * Make a new file durably: a temporary name opened with O_EXCL (never an
 * existing file, never a link someone planted), written and fsynced, then
 * linked into place, which never replaces a file that exists, and the
 * directory fsynced.  False if the file exists already (another backend
 * made it first).
 */
static bool
write_new_file(const char *path, const void *buf, size_t len)
{
	char	   *tmp = psprintf("%s.tmp.%d", path, MyProcPid);
	int			fd;
	bool		made;

	(void) unlink(tmp);			/* a leftover of a crashed backend with our pid */
	fd = OpenTransientFilePerm(tmp, O_WRONLY | O_CREAT | O_EXCL | PG_BINARY, S_IRUSR | S_IWUSR);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create \"%s\": %m", tmp)));
	if (write(fd, buf, len) != (ssize_t) len || pg_fsync(fd) != 0)
	{
		int			save = errno;

		CloseTransientFile(fd);
		unlink(tmp);
		errno = save;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write \"%s\": %m", tmp)));
	}
	CloseTransientFile(fd);
	made = (link(tmp, path) == 0);
	if (!made && errno != EEXIST)
	{
		int			save = errno;

		unlink(tmp);
		errno = save;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create \"%s\": %m", path)));
	}
	unlink(tmp);
	/*
	 * The new name must survive an OS crash before any row names it.  Not
	 * when another made it (it did so): what is there may be a link to
	 * nowhere, which fsync_fname() would make a PANIC.
	 */
	if (made)
	{
		fsync_fname(path, false);
		fsync_fname(DataDir, true);
	}
	return made;
}

/*
 * Remove what a crash left of write_new_file() and replace_file(): the
 * temporary files of processes that are gone (each holds a key, or part of
 * one).  Where nobody else may be making a file at the same time (the
 * startup process replaying, CREATE EXTENSION), and checked by pid anyway.
 */
static void
remove_leftovers(void)
{
	DIR		   *dir = AllocateDir(DataDir);
	struct dirent *de;

	while ((de = ReadDir(dir, DataDir)) != NULL)
	{
		const char *tmp = strstr(de->d_name, ".tmp.");
		bool		ours = strncmp(de->d_name, KEK_FILE ".", strlen(KEK_FILE) + 1) == 0 ||
			strncmp(de->d_name, "ade_secrets", strlen("ade_secrets")) == 0;

		if (!ours)
			continue;
		if (tmp != NULL)
		{
			char	   *end;
			long		pid = strtol(tmp + 5, &end, 10);

			if (*end != '\0' || pid <= 0 || pid == MyProcPid ||
				(kill((pid_t) pid, 0) != 0 ? errno != ESRCH : true))
				continue;		/* not a pid, ours, or alive */
		}
		else if (strcmp(de->d_name, KEK_FILE ".new") != 0 || !RecoveryInProgress())
			continue;			/* replace_file()'s, on a standby only */
		if (unlink(psprintf("%s/%s", DataDir, de->d_name)) == 0)
			ereport(LOG,
					(errmsg("ade: removed \"%s\", left by a process that crashed", de->d_name)));
	}
	FreeDir(dir);
}

static char *
kek_path(void)
{
	return psprintf("%s/%s", DataDir, KEK_FILE);
}

/* the key-encryption key, made on first use when create */
static bool
load_kek(bool create)
{
	unsigned char buf[KEY_LEN];

	if (kek_loaded)
		return true;
	keys_for_this_transaction();
	if (!read_file(kek_path(), buf, KEY_LEN))
	{
		if (!create)
			return false;
		if (!pg_strong_random(buf, KEY_LEN))
			elog(ERROR, "could not generate random bytes");
		/* another backend made it first: use what is in the file */
		if (!write_new_file(kek_path(), buf, KEY_LEN) &&
			!read_file(kek_path(), buf, KEY_LEN))
			elog(ERROR, "the ade key-encryption key vanished after it was made");
	}
	memcpy(kek, buf, KEY_LEN);
	explicit_bzero(buf, sizeof(buf));
	kek_loaded = true;
	return true;
}

/*
 * The KEK has just opened or sealed a data key: it is the one this
 * database's secrets need, which the standbys take (kekwal.c), once in each
 * backend (each run of the pg_cron job is a new one: a standby that lost
 * its file has it again within a minute).
 */
static void
kek_proven(void)
{
	if (!kek_logged && AdeKekWalLog(kek, true))
		kek_logged = true;
}

static void
require_kek(void)
{
	if (!load_kek(false))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the ade key-encryption key file %s is missing from the data directory", KEK_FILE),
				 errdetail("The stored ABM secrets are sealed with data keys that it encrypts."),
				 errhint("Copy %s from the old server's data directory (owned by the server's user, mode 0600), or add each token again with ade_add_token().",
						 KEK_FILE)));
}

/* ---- AES-256-GCM ---- */

static bool
gcm(bool enc, const unsigned char *key, const unsigned char *nonce,
	const char *aad, const unsigned char *in, int inlen, unsigned char *out,
	unsigned char *tag)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int			len;
	bool		ok;

	if (ctx == NULL)
		return false;
	ok = EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc ? 1 : 0) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1 &&
		EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc ? 1 : 0) == 1;
	if (ok && aad != NULL)
		ok = EVP_CipherUpdate(ctx, NULL, &len, (const unsigned char *) aad, (int) strlen(aad)) == 1;
	if (ok)
		ok = EVP_CipherUpdate(ctx, out, &len, in, inlen) == 1;
	if (ok && !enc)
		ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) == 1;
	if (ok)
		ok = EVP_CipherFinal_ex(ctx, out + len, &len) == 1;
	if (ok && enc)
		ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) == 1;
	EVP_CIPHER_CTX_free(ctx);
	return ok;
}

/* nonce || ciphertext || tag of plain under key, with aad */
static unsigned char *
seal_raw(const unsigned char *key, const char *aad, const unsigned char *plain,
		 int plen, int *rawlen)
{
	unsigned char *raw = palloc(NONCE_LEN + plen + TAG_LEN);

	if (!pg_strong_random(raw, NONCE_LEN))
		elog(ERROR, "could not generate random bytes");
	if (!gcm(true, key, raw, aad, plain, plen, raw + NONCE_LEN, raw + NONCE_LEN + plen))
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not encrypt a secret")));
	*rawlen = NONCE_LEN + plen + TAG_LEN;
	return raw;
}

/* the plain text of nonce || ciphertext || tag, or NULL when it does not open */
static unsigned char *
open_raw(const unsigned char *key, const char *aad, const unsigned char *raw,
		 int rawlen, int *plen)
{
	unsigned char *plain;

	if (rawlen < NONCE_LEN + TAG_LEN)
		return NULL;
	*plen = rawlen - NONCE_LEN - TAG_LEN;
	plain = palloc(*plen + 1);
	if (!gcm(false, key, raw, aad, raw + NONCE_LEN, *plen, plain, (unsigned char *) raw + NONCE_LEN + *plen))
	{
		explicit_bzero(plain, *plen + 1);
		return NULL;
	}
	plain[*plen] = '\0';
	return plain;
}

/* ---- data keys (ade_secret_keys; SPI connected) ---- */

static VaultKey *
cached_key(const char *id)
{
	int			i;

	for (i = 0; i < nkeys; i++)
		if (strcmp(keys[i].id, id) == 0)
			return &keys[i];
	return NULL;
}

static VaultKey *
cache_key(const char *id, const unsigned char *key)
{
	VaultKey   *k;

	if (nkeys == lengthof(keys))
	{
		explicit_bzero(keys, sizeof(keys));
		nkeys = 0;				/* a tiny cache: start over */
	}
	keys_for_this_transaction();
	k = &keys[nkeys++];
	strlcpy(k->id, id, sizeof(k->id));
	memcpy(k->key, key, KEY_LEN);
	return k;
}

static char *
key_aad(const char *id)
{
	return psprintf("ade_secret_keys.wrapped:%s", id);
}

/* a data key by id, unwrapped with the KEK; NULL when there is no such key */
static VaultKey *
load_key(const char *id)
{
	VaultKey   *k = cached_key(id);
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	char	   *sql;
	int			rc;
	bool		isnull;
	bytea	   *wrapped;
	unsigned char *key;
	int			len;

	if (k)
		return k;
	args[0] = CStringGetTextDatum(id);
	sql = psprintf("SELECT wrapped FROM %s.ade_secret_keys WHERE id = $1", AdeSchema());
	rc = SPI_execute_with_args(sql, 1, argtypes, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	if (SPI_processed != 1)
		return NULL;
	wrapped = DatumGetByteaPCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	require_kek();
	key = open_raw(kek, key_aad(id), (unsigned char *) VARDATA_ANY(wrapped),
				   VARSIZE_ANY_EXHDR(wrapped), &len);
	if (key == NULL || len != KEY_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the ade data key %s does not open with the key-encryption key %s", id, KEK_FILE),
				 errhint("%s is not the one the stored keys were sealed with (made anew by a restore?): copy the right one over it (see Secrets at rest).", KEK_FILE)));
	k = cache_key(id, key);
	explicit_bzero(key, KEY_LEN);
	kek_proven();
	return k;
}

/* a new data key, sealed with the KEK, stored as the current one; its id */
static char *
new_data_key(bool first)
{
	unsigned char raw[ID_LEN / 2];
	unsigned char key[KEY_LEN];
	char	   *id = palloc(ID_LEN + 1);
	unsigned char *wrapped;
	int			wlen;
	bytea	   *w;
	Oid			argtypes[2] = {TEXTOID, BYTEAOID};
	Datum		args[2];
	char	   *sql;
	int			rc;
	int			i;

	/*
	 * The KEK is made only for the very first data key: when data keys
	 * exist, a missing KEK is an error (a new one would open none of them,
	 * and would stand in the way of the right one coming back).
	 */
	if (!first)
		require_kek();
	(void) load_kek(true);
	if (!pg_strong_random(raw, sizeof(raw)) || !pg_strong_random(key, sizeof(key)))
		elog(ERROR, "could not generate random bytes");
	for (i = 0; i < (int) sizeof(raw); i++)
		snprintf(id + 2 * i, 3, "%02x", raw[i]);
	wrapped = seal_raw(kek, key_aad(id), key, KEY_LEN, &wlen);
	w = palloc(VARHDRSZ + wlen);
	SET_VARSIZE(w, VARHDRSZ + wlen);
	memcpy(VARDATA(w), wrapped, wlen);
	args[0] = CStringGetTextDatum(id);
	args[1] = PointerGetDatum(w);
	rc = SPI_execute(psprintf("UPDATE %s.ade_secret_keys SET current = false WHERE current", AdeSchema()),
					 false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	sql = psprintf("INSERT INTO %s.ade_secret_keys (id, wrapped, current) VALUES ($1, $2, true)",
				   AdeSchema());
	rc = SPI_execute_with_args(sql, 2, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	cache_key(id, key);
	explicit_bzero(key, sizeof(key));
	kek_proven();
	return id;
}

/*
 * The current data key, made on first use.  Two first uses at once: the
 * table's lock makes the second wait and then find the first's key.
 */
static VaultKey *
current_key(void)
{
	char	   *sql;
	int			rc;
	bool		isnull;
	char	   *id;

	/*
	 * KEY SHARE: a DELETE of the key waits until what this transaction seals
	 * with it is committed, and then finds it in use (the table's trigger)
	 */
	sql = psprintf("SELECT id FROM %s.ade_secret_keys WHERE current FOR KEY SHARE", AdeSchema());
	rc = SPI_execute(sql, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
	{
		SPI_freetuptable(SPI_tuptable);
		rc = SPI_execute(psprintf("LOCK TABLE %s.ade_secret_keys IN SHARE ROW EXCLUSIVE MODE", AdeSchema()),
						 false, 0);
		if (rc != SPI_OK_UTILITY)
			elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
		rc = SPI_execute(sql, false, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
		if (SPI_processed == 0)
		{
			bool		none;
			bool		isnull;

			rc = SPI_execute(psprintf("SELECT NOT EXISTS (SELECT 1 FROM %s.ade_secret_keys)", AdeSchema()),
							 false, 1);
			if (rc != SPI_OK_SELECT)
				elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
			none = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			return load_key(new_data_key(none));
		}
	}
	id = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return load_key(id);
}

/* ---- sealing ---- */

/* the legacy (0.3) key file of a key id, or NULL when it is missing */
static bool
legacy_key(const char *id, unsigned char *key)
{
	return read_file(psprintf("%s/ade_secrets_%s.key", DataDir, id), key, KEY_LEN);
}


/* where a value is stored, its associated data */
char *
AdeVaultPlace(const char *table, const char *column, int64 row)
{
	return psprintf("%s.%s:" INT64_FORMAT, table, column, row);
}

/* prefix id ':' base64(raw) */
static char *
sealed_text(const char *prefix, const char *id, const unsigned char *raw, int rawlen)
{
	char	   *out = palloc(strlen(prefix) + ID_LEN + 1 + pg_b64_enc_len(rawlen) + 1);
	int			n;

	n = sprintf(out, "%s%s:", prefix, id);
	n += pg_b64_encode((const char *) raw, rawlen, out + n, pg_b64_enc_len(rawlen));
	out[n] = '\0';
	return out;
}

/*
 * The SQL of 0.3 and before has no ade_secret_keys: until ALTER EXTENSION
 * ade UPDATE, values are sealed as 0.3 did, with the key file named by
 * ade_secrets.current (made on first use), so that the library serves that
 * SQL; the upgrade re-seals them (ade_vault_upgrade()).
 */
static char *
legacy_seal(const char *plain)
{
	char	   *cur = psprintf("%s/ade_secrets.current", DataDir);
	unsigned char buf[ID_LEN + 1];
	unsigned char key[KEY_LEN];
	char	   *id;
	unsigned char *raw;
	int			rawlen;

	if (!read_file(cur, buf, ID_LEN))
	{
		unsigned char r[ID_LEN / 2];
		int			i;

		if (!pg_strong_random(r, sizeof(r)) || !pg_strong_random(key, sizeof(key)))
			elog(ERROR, "could not generate random bytes");
		for (i = 0; i < (int) sizeof(r); i++)
			snprintf((char *) buf + 2 * i, 3, "%02x", r[i]);
		(void) write_new_file(psprintf("%s/ade_secrets_%s.key", DataDir, (char *) buf), key, KEY_LEN);
		if (!write_new_file(cur, buf, ID_LEN))
			(void) read_file(cur, buf, ID_LEN);	/* another backend made one first */
	}
	buf[ID_LEN] = '\0';
	id = pstrdup((char *) buf);
	if (!valid_id(id) || !legacy_key(id, key))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the ade secret key file named by ade_secrets.current is missing or damaged")));
	raw = seal_raw(key, NULL, (const unsigned char *) plain, (int) strlen(plain), &rawlen);
	explicit_bzero(key, sizeof(key));
	return sealed_text(LEGACY_PREFIX, id, raw, rawlen);
}

/* seal a secret to be stored at place (AdeVaultPlace); SPI connected */
char *
AdeVaultSeal(const char *plain, const char *place)
{
	VaultKey   *k;
	int			rawlen;
	unsigned char *raw;

	if (!AdeSqlAtLeast(0, 4))
		return legacy_seal(plain);
	k = current_key();
	raw = seal_raw(k->key, place, (const unsigned char *) plain, (int) strlen(plain), &rawlen);
	return sealed_text(PREFIX, k->id, raw, rawlen);
}

/*
 * Open a sealed value stored at place.  Returns NULL and sets *why when it
 * does not open (no key, wrong place, damaged); raises only when the KEK
 * itself is missing or damaged.
 */
static char *
vault_open(const char *sealed, const char *place, const char **why)
{
	bool		legacy = strncmp(sealed, LEGACY_PREFIX, strlen(LEGACY_PREFIX)) == 0;
	char		id[ID_LEN + 1];
	const char *b64;
	int			b64len;
	unsigned char *raw;
	int			rawlen;
	int			plen;
	unsigned char *plain;
	unsigned char legacy_buf[KEY_LEN];
	const unsigned char *key;

	if ((!legacy && strncmp(sealed, PREFIX, strlen(PREFIX)) != 0) ||
		strlen(sealed) < strlen(PREFIX) + ID_LEN + 1 ||
		sealed[strlen(PREFIX) + ID_LEN] != ':')
	{
		*why = "it is not sealed";
		return NULL;
	}
	memcpy(id, sealed + strlen(PREFIX), ID_LEN);
	id[ID_LEN] = '\0';
	if (!valid_id(id))
	{
		*why = "it names no valid key";
		return NULL;
	}
	if (legacy)
	{
		if (!legacy_key(id, legacy_buf))
		{
			*why = psprintf("its 0.3 key file ade_secrets_%s.key is missing", id);
			return NULL;
		}
		key = legacy_buf;
	}
	else
	{
		VaultKey   *k = load_key(id);

		if (k == NULL)
		{
			*why = psprintf("its data key %s is not in ade_secret_keys", id);
			return NULL;
		}
		key = k->key;
	}
	b64 = sealed + strlen(PREFIX) + ID_LEN + 1;
	b64len = (int) strlen(b64);
	raw = palloc(pg_b64_dec_len(b64len));
	rawlen = pg_b64_decode(b64, b64len, (char *) raw, pg_b64_dec_len(b64len));
	/* 0.3 values were sealed without associated data */
	plain = rawlen < 0 ? NULL : open_raw(key, legacy ? NULL : place, raw, rawlen, &plen);
	explicit_bzero(legacy_buf, sizeof(legacy_buf));
	if (plain == NULL)
	{
		*why = psprintf("it does not open with key %s where it is stored", id);
		return NULL;
	}
	return (char *) plain;
}

/* open a sealed value stored at place, or raise a clear error; SPI connected */
char *
AdeVaultOpen(const char *sealed, const char *place)
{
	const char *why = NULL;
	char	   *plain = vault_open(sealed, place, &why);

	if (plain == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("a stored ade secret (%s) cannot be opened: %s", place, why),
				 errhint("Restore the key it was sealed with, or add the token again with ade_add_token().")));
	return plain;
}

/* open a sealed value, or NULL when it does not open (a session, say) */
char *
AdeVaultTryOpen(const char *sealed, const char *place)
{
	const char *why;

	return vault_open(sealed, place, &why);
}

/* ---- re-sealing ---- */

/*
 * Re-seal every stored secret with the current key, bound to its place,
 * locking the rows it re-seals (a renewal or a session saved meanwhile
 * waits for it, and never gets old secrets back).  A value that does not
 * open raises, unless tolerant: then it stays as it is, with a WARNING (a
 * session that does not open is cleared: a new one is made when needed).
 */
static void
reseal_all(bool tolerant)
{
	static const char *const cols[] = {"consumer_secret", "access_token", "access_secret", "session_token"};
	const char *schema = AdeSchema();
	char	   *sql;
	int			rc;
	uint64		i;
	int			c;
	SPITupleTable *tt;

	sql = psprintf("SELECT token_id, consumer_secret, access_token, access_secret, session_token "
				   "FROM %s.ade_token_secrets ORDER BY token_id FOR UPDATE", schema);
	rc = SPI_execute(sql, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	tt = SPI_tuptable;
	for (i = 0; i < tt->numvals; i++)
	{
		bool		isnull;
		int64		tid = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		Datum		args[5];
		char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
		Oid			types[5] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};

		args[0] = Int64GetDatum(tid);
		for (c = 0; c < 4; c++)
		{
			Datum		d = SPI_getbinval(tt->vals[i], tt->tupdesc, c + 2, &isnull);
			char	   *place = AdeVaultPlace("ade_token_secrets", cols[c], tid);
			char	   *sealed;
			char	   *plain;
			const char *why;

			if (isnull)
			{
				nulls[c + 1] = 'n';
				continue;
			}
			sealed = TextDatumGetCString(d);
			plain = vault_open(sealed, place, &why);
			if (plain == NULL && c == 3)
				nulls[c + 1] = 'n';		/* a session: a new one is made when needed */
			else if (plain == NULL && tolerant)
			{
				ereport(WARNING,
						(errmsg("ade: the stored secret %s cannot be opened (%s); it is left as it is", place, why)));
				args[c + 1] = d;
			}
			else if (plain == NULL)
				(void) AdeVaultOpen(sealed, place);	/* raises, saying why */
			else
			{
				args[c + 1] = CStringGetTextDatum(AdeVaultSeal(plain, place));
				explicit_bzero(plain, strlen(plain));
			}
		}
		rc = SPI_execute_with_args(psprintf("UPDATE %s.ade_token_secrets SET consumer_secret = $2, "
											"access_token = $3, access_secret = $4, session_token = $5 "
											"WHERE token_id = $1", schema),
								   5, types, args, nulls, false, 0);
		if (rc != SPI_OK_UPDATE)
			elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	}

	/* the API accounts' keys and tokens (api.c; 0.5) */
	if (AdeSqlAtLeast(0, 5))
	{
		rc = SPI_execute(psprintf("SELECT id, private_key, access_token FROM %s.abm_api_accounts "
								  "ORDER BY id FOR UPDATE", schema), false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
		tt = SPI_tuptable;
		for (i = 0; i < tt->numvals; i++)
		{
			bool		isnull;
			int64		aid = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
			char	   *kplace = AdeVaultPlace("abm_api_accounts", "private_key", aid);
			char	   *tplace = AdeVaultPlace("abm_api_accounts", "access_token", aid);
			char	   *sealed = TextDatumGetCString(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
			Datum		tok = SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull);
			const char *why;
			char	   *plain = vault_open(sealed, kplace, &why);
			Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
			Datum		args[3];
			char		nulls[3] = {' ', ' ', 'n'};

			if (plain == NULL && tolerant)
			{
				ereport(WARNING,
						(errmsg("ade: the stored secret %s cannot be opened (%s); it is left as it is", kplace, why)));
				continue;
			}
			if (plain == NULL)
				(void) AdeVaultOpen(sealed, kplace);	/* raises, saying why */
			args[0] = Int64GetDatum(aid);
			args[1] = CStringGetTextDatum(AdeVaultSeal(plain, kplace));
			explicit_bzero(plain, strlen(plain));
			/* the access token: sealed again, or dropped (a new one comes when needed) */
			if (!isnull && (plain = vault_open(TextDatumGetCString(tok), tplace, &why)) != NULL)
			{
				args[2] = CStringGetTextDatum(AdeVaultSeal(plain, tplace));
				nulls[2] = ' ';
				explicit_bzero(plain, strlen(plain));
			}
			rc = SPI_execute_with_args(psprintf("UPDATE %s.abm_api_accounts SET private_key = $2, access_token = $3, "
												"access_token_expires_at = CASE WHEN $3 IS NULL THEN NULL "
												"ELSE access_token_expires_at END WHERE id = $1", schema),
									   3, types, args, nulls, false, 0);
			if (rc != SPI_OK_UPDATE)
				elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
		}
	}

	sql = psprintf("SELECT private_key FROM %s.ade_keypair WHERE id = 1 FOR UPDATE", schema);
	rc = SPI_execute(sql, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		bool		isnull;
		char	   *sealed = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		char	   *place = AdeVaultPlace("ade_keypair", "private_key", 1);
		const char *why;
		char	   *plain = vault_open(sealed, place, &why);
		Oid			types[1] = {TEXTOID};
		Datum		args[1];

		if (plain == NULL && tolerant)
			ereport(WARNING,
					(errmsg("ade: the stored private key cannot be opened (%s); it is left as it is", why)));
		else
		{
			if (plain == NULL)
				(void) AdeVaultOpen(sealed, place);
			args[0] = CStringGetTextDatum(AdeVaultSeal(plain, place));
			explicit_bzero(plain, strlen(plain));
			rc = SPI_execute_with_args(psprintf("UPDATE %s.ade_keypair SET private_key = $1 WHERE id = 1", schema),
									   1, types, args, NULL, false, 0);
			if (rc != SPI_OK_UPDATE)
				elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
		}
	}
}

/*
 * ade_rotate_secret_key() returns text: the new data key's id.  Makes a new
 * data key (stored in ade_secret_keys, sealed with the KEK) and re-seals
 * every stored secret with it, in the caller's transaction.  Rotations run
 * one at a time.
 */
Datum
ade_rotate_secret_key(PG_FUNCTION_ARGS)
{
	MemoryContext caller = CurrentMemoryContext;
	char	   *id;
	text	   *result;
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!AdeSqlAtLeast(0, 4))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the ade extension in this database is older than its library"),
				 errhint("Run ALTER EXTENSION ade UPDATE, then rotate.")));
	rc = SPI_execute(psprintf("LOCK TABLE %s.ade_secret_keys IN SHARE ROW EXCLUSIVE MODE", AdeSchema()),
					 false, 0);
	if (rc != SPI_OK_UTILITY)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	id = new_data_key(false);
	reseal_all(false);
	MemoryContextSwitchTo(caller);
	result = cstring_to_text(id);
	SPI_finish();
	PG_RETURN_TEXT_P(result);
}

/*
 * ade_vault_upgrade() returns void: the 0.3 to 0.4 upgrade.  Makes the KEK
 * and a first data key, and re-seals the secrets of 0.3 (a key file each,
 * no associated data) with it; one that does not open (its key file is
 * gone) stays as it is, with a WARNING, and the upgrade goes on.
 */
Datum
ade_vault_upgrade(PG_FUNCTION_ARGS)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	(void) load_kek(true);
	reseal_all(true);
	SPI_finish();
	PG_RETURN_VOID();
}

/* whether this database stores data keys (sealed with the KEK) */
static bool
data_keys_exist(void)
{
	int			rc;
	bool		stored;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute(psprintf("SELECT 1 FROM %s.ade_secret_keys LIMIT 1", AdeSchema()), true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	stored = SPI_processed == 1;
	SPI_finish();
	return stored;
}

/*
 * ade_secret_status() returns text: what is wrong with the keys, in words,
 * or NULL.  For ade_status.attention: SECURITY DEFINER, so that ade_reader
 * may call it.  It reads no key (the file's presence, size, readability and
 * mode only): a session that reads the status never holds key material.  A
 * file that is there but not the one the keys were sealed with is reported
 * by the next run that opens a secret (load_key(): the token's last_error).
 */
Datum
ade_secret_status(PG_FUNCTION_ARGS)
{
	struct stat st;

	if (!data_keys_exist())
		PG_RETURN_NULL();
	if (stat(kek_path(), &st) != 0)
	{
		/* a standby's comes with the WAL: what to do differs */
		if (RecoveryInProgress())
			PG_RETURN_TEXT_P(cstring_to_text("the key-encryption key file " KEK_FILE " is missing from this standby's data directory: "
											 "promoted, it would open no stored secret; with ade.replicate_key = on on the primary "
											 "its next run logs the key and this standby makes the file, or copy the file from it "
											 "(see Secrets at rest)"));
		PG_RETURN_TEXT_P(cstring_to_text("the key-encryption key file " KEK_FILE " is missing from the data directory: "
										 "no stored secret opens; copy it from the old server (see Secrets at rest)"));
	}
	if (st.st_size != KEY_LEN || access(kek_path(), R_OK) != 0)
		PG_RETURN_TEXT_P(cstring_to_text("the key-encryption key file " KEK_FILE " in the data directory cannot be read "
										 "or is damaged: restore it (see Secrets at rest)"));
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		PG_RETURN_TEXT_P(cstring_to_text("the key-encryption key file " KEK_FILE " can be read by others than the "
										 "server's user: chmod 600 it"));
	PG_RETURN_NULL();
}

/*
 * ade_vault_init() returns void: makes the key-encryption key file now, at
 * CREATE EXTENSION, not at the first secret, so that a standby made from a
 * base backup taken after the install has it, and logs it for the standbys
 * as a key no data key has proven (a standby keeps a key of its own that
 * differs).  At ALTER EXTENSION UPDATE, where data keys exist, it never
 * makes one: the file must be there, and it opens the current data key,
 * which logs it as proven.
 */
Datum
ade_vault_init(PG_FUNCTION_ARGS)
{
	int			rc;

	remove_leftovers();
	if (!data_keys_exist())
	{
		/* CREATE EXTENSION: the key, made or found, proven by no data key yet */
		(void) load_kek(true);
		(void) AdeKekWalLog(kek, false);
		PG_RETURN_VOID();
	}
	/* ALTER EXTENSION UPDATE: never a new KEK, which would open none */
	require_kek();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute(psprintf("SELECT id FROM %s.ade_secret_keys WHERE current", AdeSchema()), true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		bool		isnull;
		char	   *id = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

		(void) load_key(id);	/* it opens: proven, and logged */
	}
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * Replace a file durably: a new file made as write_new_file() makes one,
 * renamed over the old (atomic), the directory fsynced.
 */
static void
replace_file(const char *path, const void *buf, size_t len)
{
	char	   *fresh = psprintf("%s.new", path);

	(void) unlink(fresh);
	if (!write_new_file(fresh, buf, len))
		elog(ERROR, "could not make \"%s\"", fresh);
	if (rename(fresh, path) != 0)
	{
		int			save = errno;

		unlink(fresh);
		errno = save;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not rename \"%s\" to \"%s\": %m", fresh, path)));
	}
	fsync_fname(path, false);
	fsync_fname(DataDir, true);
}

/*
 * Replaying the KEK (kekwal.c, in the startup process): what is in the
 * data directory becomes the primary's key, where that cannot lose one.
 * - No file: made durably, in any recovery (the key, as the WAL has it).
 * - The same key (through a link too): nothing.
 * - In archive recovery (a standby, a restore from a base backup): a
 *   proven key (it opened or sealed a data key of the primary's) replaces a
 *   different or damaged file (wrong size, unreadable, a link to nowhere),
 *   durably; an unproven one (a primary's file no data key has opened yet:
 *   a new install, or a key made anew by a primary that lost its own)
 *   replaces only a damaged one, so that the key the data need is kept
 *   where it still is, until the primary proves its own.
 * - In crash recovery, a file that is there is kept: the records are this
 *   server's own past, and an admin may have put the right key in place
 *   since (after a restore from pg_dump, say).
 * Never an ERROR: it would end the recovery.
 */
void
AdeVaultRestoreKek(const unsigned char *key, bool proven)
{
	unsigned char have[KEY_LEN];
	MemoryContext cxt = CurrentMemoryContext;
	char	   *path = kek_path();

	PG_TRY();
	{
		struct stat st;
		bool		usable;

		remove_leftovers();
		if (lstat(path, &st) != 0)
		{
			if (errno != ENOENT)
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not stat \"%s\": %m", path)));
			if (write_new_file(path, key, KEY_LEN))
				ereport(LOG,
						(errmsg("ade: %s made from the primary's WAL", KEK_FILE)));
		}
		else
		{
			/* usable: a file of the right size that can be read, maybe linked */
			usable = stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == KEY_LEN &&
				access(path, R_OK) == 0 && read_file(path, have, KEY_LEN);
			if (usable && memcmp(have, key, KEY_LEN) == 0)
				;				/* the same */
			else if (!ArchiveRecoveryRequested)
				ereport(WARNING,
						(errmsg("ade: %s differs from the key-encryption key in the WAL being recovered: kept", KEK_FILE),
						 errdetail("Crash recovery does not replace the file: the records are this server's own past.")));
			else if (usable && !proven)
				ereport(WARNING,
						(errmsg("ade: the primary's %s, which no data key has opened yet, differs from this server's: kept", KEK_FILE),
						 errdetail("This server's is replaced once the primary's opens or seals a data key (its next run, or a token added): the key the data need is never lost meanwhile.")));
			else
			{
				replace_file(path, key, KEY_LEN);
				ereport(LOG,
						(errmsg("ade: %s replaced by the primary's (it %s)", KEK_FILE,
								usable ? "differed" : "could not be used")));
			}
		}
	}
	PG_CATCH();
	{
		ErrorData  *e;

		MemoryContextSwitchTo(cxt);
		e = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
				(errmsg("ade: %s could not be made from the primary's WAL: %s", KEK_FILE, e->message)));
	}
	PG_END_TRY();
	explicit_bzero(have, sizeof(have));
}
