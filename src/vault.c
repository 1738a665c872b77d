/*-------------------------------------------------------------------------
 *
 * vault.c
 *		Encryption at rest of the secrets ade stores: the private key, the
 *		token secrets and the ABM session tokens.
 *
 * Owns: the secret key files in the data directory and AES-256-GCM sealing
 * of single values.  It does not know which columns hold secrets: token.c
 * and abm.c seal what they store and open what they read.
 *
 * Design notes:
 *
 * - The key lives outside the database, in a file of the data directory
 *   (ade_secrets_<id>.key, 32 random bytes, mode 0600, made on first use), so
 *   that pg_dump alone does not hand over a working ABM token, while a
 *   restore on the same server (or with the key file copied) works.  A
 *   setting would not do: current_setting() shows a placeholder's value to
 *   anyone before the library loads.
 * - A sealed value is "ade1:<id>:" + base64(nonce[12] || ciphertext || tag[16]);
 *   the key id in it names the file that opens it.  The file
 *   ade_secrets.current names the key new values are sealed with.
 *   ade_rotate_secret_key() makes a new key, points ade_secrets.current at
 *   it and re-seals every stored secret in the caller's transaction; the old
 *   file stays (a rolled-back rotation still opens) until the admin removes
 *   it.
 * - Keys are cached per backend.  OpenSSL cipher contexts are freed before
 *   any ERROR is raised.
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
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/evp.h>

#include "ade.h"
#include "catalog/pg_type.h"
#include "common/base64.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(ade_rotate_secret_key);

#define KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define ID_LEN 8
#define PREFIX "ade1:"
#define CURRENT_FILE "ade_secrets.current"

/* the keys this backend has read, by id */
typedef struct VaultKey
{
	char		id[ID_LEN + 1];
	unsigned char key[KEY_LEN];
} VaultKey;

static VaultKey keys[8];
static int	nkeys = 0;

static char *
key_path(const char *id)
{
	return psprintf("%s/ade_secrets_%s.key", DataDir, id);
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

/* read exactly len bytes of a file; false if it does not exist */
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
				 errmsg("could not open ade secret key file \"%s\": %m", path)));
	}
	n = read(fd, buf, len);
	CloseTransientFile(fd);
	if (n != (ssize_t) len)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("ade secret key file \"%s\" is damaged", path)));
	return true;
}

/* write a new file atomically (temp + link): false if it exists already */
static bool
write_new_file(const char *path, const void *buf, size_t len)
{
	char	   *tmp = psprintf("%s.tmp.%d", path, MyProcPid);
	int			fd;
	bool		made;

	fd = OpenTransientFilePerm(tmp, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY, S_IRUSR | S_IWUSR);
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
	return made;
}

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
load_key(const char *id)
{
	VaultKey   *k = cached_key(id);
	unsigned char buf[KEY_LEN];

	if (k)
		return k;
	if (!read_file(key_path(id), buf, KEY_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the ade secret key file ade_secrets_%s.key is missing from the data directory", id),
				 errdetail("The stored ABM secrets were encrypted with it."),
				 errhint("Copy ade_secrets_*.key and ade_secrets.current from the old server's data directory, or add the token again with ade_add_token().")));
	if (nkeys == lengthof(keys))
		nkeys = 0;				/* a tiny cache: start over */
	k = &keys[nkeys++];
	strlcpy(k->id, id, sizeof(k->id));
	memcpy(k->key, buf, KEY_LEN);
	explicit_bzero(buf, sizeof(buf));
	return k;
}

/* make a new key file; returns its id */
static char *
new_key(void)
{
	unsigned char raw[ID_LEN / 2];
	unsigned char key[KEY_LEN];
	char	   *id = palloc(ID_LEN + 1);
	int			i;

	if (!pg_strong_random(raw, sizeof(raw)) || !pg_strong_random(key, sizeof(key)))
		elog(ERROR, "could not generate random bytes");
	for (i = 0; i < (int) sizeof(raw); i++)
		snprintf(id + 2 * i, 3, "%02x", raw[i]);
	(void) write_new_file(key_path(id), key, KEY_LEN);
	explicit_bzero(key, sizeof(key));
	return id;
}

/* the id of the key new values are sealed with; made on first use */
static char *
current_id(bool create)
{
	char	   *path = psprintf("%s/%s", DataDir, CURRENT_FILE);
	unsigned char buf[ID_LEN + 1];
	char	   *id;

	if (read_file(path, buf, ID_LEN))
	{
		buf[ID_LEN] = '\0';
		if (!valid_id((char *) buf))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("ade secret key pointer \"%s\" is damaged", path)));
		return pstrdup((char *) buf);
	}
	if (!create)
		return NULL;
	id = new_key();
	if (!write_new_file(path, id, ID_LEN))
		return current_id(false);	/* another backend made one first */
	return id;
}

/* point ade_secrets.current at id (rotation) */
static void
set_current(const char *id)
{
	char	   *path = psprintf("%s/%s", DataDir, CURRENT_FILE);
	char	   *tmp = psprintf("%s.new.%d", path, MyProcPid);
	int			fd;

	fd = OpenTransientFilePerm(tmp, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY, S_IRUSR | S_IWUSR);
	if (fd < 0 || write(fd, id, ID_LEN) != ID_LEN || pg_fsync(fd) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write \"%s\": %m", tmp)));
	CloseTransientFile(fd);
	if (rename(tmp, path) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not rename \"%s\": %m", tmp)));
}

static bool
gcm(bool enc, const unsigned char *key, const unsigned char *nonce,
	const unsigned char *in, int inlen, unsigned char *out, unsigned char *tag)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int			len;
	bool		ok;

	if (ctx == NULL)
		return false;
	ok = EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc ? 1 : 0) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1 &&
		EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc ? 1 : 0) == 1 &&
		EVP_CipherUpdate(ctx, out, &len, in, inlen) == 1;
	if (ok && !enc)
		ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) == 1;
	if (ok)
		ok = EVP_CipherFinal_ex(ctx, out + len, &len) == 1;
	if (ok && enc)
		ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) == 1;
	EVP_CIPHER_CTX_free(ctx);
	return ok;
}

/* seal a secret for storage */
char *
AdeVaultSeal(const char *plain)
{
	VaultKey   *k = load_key(current_id(true));
	int			plen = (int) strlen(plain);
	int			rawlen = NONCE_LEN + plen + TAG_LEN;
	unsigned char *raw = palloc(rawlen);
	char	   *out;
	int			n;

	if (!pg_strong_random(raw, NONCE_LEN))
		elog(ERROR, "could not generate random bytes");
	if (!gcm(true, k->key, raw, (const unsigned char *) plain, plen,
			 raw + NONCE_LEN, raw + NONCE_LEN + plen))
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not encrypt a secret")));
	out = palloc(strlen(PREFIX) + ID_LEN + 1 + pg_b64_enc_len(rawlen) + 1);
	n = sprintf(out, PREFIX "%s:", k->id);
	n += pg_b64_encode((const char *) raw, rawlen, out + n, pg_b64_enc_len(rawlen));
	out[n] = '\0';
	return out;
}

/* open a sealed secret */
char *
AdeVaultOpen(const char *sealed)
{
	char		id[ID_LEN + 1];
	const char *b64;
	unsigned char *raw;
	int			rawlen;
	int			plen;
	char	   *plain;
	VaultKey   *k;

	if (strncmp(sealed, PREFIX, strlen(PREFIX)) != 0 ||
		strlen(sealed) < strlen(PREFIX) + ID_LEN + 1 ||
		sealed[strlen(PREFIX) + ID_LEN] != ':')
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("a stored ade secret is not sealed")));
	memcpy(id, sealed + strlen(PREFIX), ID_LEN);
	id[ID_LEN] = '\0';
	if (!valid_id(id))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("a stored ade secret names no valid key")));
	k = load_key(id);
	b64 = sealed + strlen(PREFIX) + ID_LEN + 1;
	raw = palloc(pg_b64_dec_len(strlen(b64)));
	rawlen = pg_b64_decode(b64, strlen(b64), (char *) raw, pg_b64_dec_len(strlen(b64)));
	if (rawlen < NONCE_LEN + TAG_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("a stored ade secret is damaged")));
	plen = rawlen - NONCE_LEN - TAG_LEN;
	plain = palloc(plen + 1);
	if (!gcm(false, k->key, raw, raw + NONCE_LEN, plen,
			 (unsigned char *) plain, raw + NONCE_LEN + plen))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("a stored ade secret does not open with key %s", id),
				 errhint("The key file may have been replaced; restore the one the secrets were sealed with.")));
	plain[plen] = '\0';
	return plain;
}

/*
 * ade_rotate_secret_key() returns text: the new key id.  Re-seals every
 * stored secret with a new key in the caller's transaction.
 */
Datum
ade_rotate_secret_key(PG_FUNCTION_ARGS)
{
	MemoryContext caller = CurrentMemoryContext;
	const char *schema;
	char	   *id;
	char	   *sql;
	text	   *result;
	int			rc;
	uint64		i;
	uint64		n;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	schema = AdeSchema();
	(void) current_id(true);
	id = new_key();
	set_current(id);

	/* every sealed column: open with its old key, seal with the new one */
	sql = psprintf("SELECT 's', token_id, consumer_secret, access_token, access_secret, session_token "
				   "FROM %s.ade_token_secrets "
				   "UNION ALL SELECT 'k', id, private_key, NULL, NULL, NULL FROM %s.ade_keypair",
				   schema, schema);
	rc = SPI_execute(sql, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	n = SPI_processed;
	{
		SPITupleTable *tt = SPI_tuptable;

		for (i = 0; i < n; i++)
		{
			bool		isnull;
			char	   *kind = TextDatumGetCString(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
			int64		rid = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
			Datum		args[5];
			char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
			Oid			types[5] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
			int			nargs = kind[0] == 's' ? 5 : 2;
			int			c;

			args[0] = Int64GetDatum(rid);
			for (c = 1; c < nargs; c++)
			{
				Datum		d = SPI_getbinval(tt->vals[i], tt->tupdesc, c + 2, &isnull);

				if (isnull)
					nulls[c] = 'n';
				else
					args[c] = CStringGetTextDatum(AdeVaultSeal(AdeVaultOpen(TextDatumGetCString(d))));
			}
			if (kind[0] == 's')
				sql = psprintf("UPDATE %s.ade_token_secrets SET consumer_secret = $2, access_token = $3, "
							   "access_secret = $4, session_token = $5 WHERE token_id = $1", schema);
			else
				sql = psprintf("UPDATE %s.ade_keypair SET private_key = $2 WHERE id = $1", schema);
			rc = SPI_execute_with_args(sql, nargs, types, args, nulls, false, 0);
			if (rc != SPI_OK_UPDATE)
				elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
		}
	}
	MemoryContextSwitchTo(caller);
	result = cstring_to_text(id);
	SPI_finish();
	PG_RETURN_TEXT_P(result);
}
