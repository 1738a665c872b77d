/*-------------------------------------------------------------------------
 *
 * kekwal.c
 *		The key-encryption key on every node: a custom WAL resource manager
 *		(PostgreSQL 15) that makes ade_kek.key again on every standby as WAL
 *		is replayed.
 *
 * Only with ade.replicate_key on (off by default): the key then passes
 * through the WAL buffers in shared memory, where every backend's memory
 * map sees it until they are reused, which a server without standbys to
 * feed has no reason to allow (issue 19: key material in memory no longer
 * than it is used).
 *
 * Owns the resource manager "ade" (ADE_RMGR_ID), its two kinds of record
 * (the KEK, 32 bytes: KEK, proven, when it has just opened or sealed a data
 * key of the primary's; KEK_UNPROVEN, the primary's file before any data key
 * proved it) and what replaying them does.  vault.c owns the file: it logs
 * it unproven at CREATE EXTENSION (ade_vault_init()), and proven once in
 * each backend whose KEK opens or seals a data key (every run that opens a
 * secret; ALTER EXTENSION UPDATE), so that a standby made before the
 * extension, or one that lost the file, gets it with no file copied by
 * hand.  Replaying (AdeVaultRestoreKek()) makes a missing file; in archive
 * recovery (a standby, a restore) a proven key replaces a different or
 * damaged file, an unproven one never replaces a usable file (the key this
 * server has may be the one the data need: a primary that lost its file
 * makes a new one, which no data key proves); in crash recovery nothing
 * replaces a file.
 *
 * Why WAL: files in the data directory do not replicate, and the KEK must
 * be on the node that takes over when the primary dies.  What this costs: the
 * KEK is in the WAL, as it is already in every base backup (pg_basebackup
 * copies the data directory, the file with it).  A WAL archive is to be kept
 * as safely as base backups; a pg_dump still carries no working secret.
 *
 * The resource manager can only be registered while the server preloads
 * the library (shared_preload_libraries, as the README says for every
 * node): a node that replays a record of it without having it registered
 * stops its recovery with "resource manager ... does not exist".  So a
 * record is logged only where the manager is registered (the primary
 * preloads ade), and the README says every node must preload it.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/kekwal.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xloginsert.h"
#include "access/xlogreader.h"
#include "ade.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"

/*
 * A custom resource manager id (128-255; 128 is for experiments).  It must
 * stay the same across versions: WAL written by one is replayed by the next.
 */
#define ADE_RMGR_ID 201

#define XLOG_ADE_KEK 0x00		/* the KEK, proven: it opened or sealed a data key */
#define XLOG_ADE_KEK_UNPROVEN 0x10	/* the primary's file, no data key proven it yet */

static bool registered = false;

static void
ade_rmgr_redo(XLogReaderState *record)
{
	uint8		info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;

	if (info != XLOG_ADE_KEK && info != XLOG_ADE_KEK_UNPROVEN)
		elog(PANIC, "ade_rmgr_redo: unknown op code %u", info);
	if (XLogRecGetDataLen(record) != ADE_KEK_LEN)
	{
		ereport(WARNING,
				(errmsg("ade: a key-encryption key record of %u bytes was not replayed", XLogRecGetDataLen(record))));
		return;
	}
	AdeVaultRestoreKek((const unsigned char *) XLogRecGetData(record), info == XLOG_ADE_KEK);
}

/* what pg_waldump shows: never the key */
static void
ade_rmgr_desc(StringInfo buf, XLogReaderState *record)
{
	uint8		info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;

	if (info == XLOG_ADE_KEK || info == XLOG_ADE_KEK_UNPROVEN)
		appendStringInfoString(buf, "the key-encryption key file ade_kek.key (not shown)");
}

static const char *
ade_rmgr_identify(uint8 info)
{
	switch (info & ~XLR_INFO_MASK)
	{
		case XLOG_ADE_KEK:
			return "KEK";
		case XLOG_ADE_KEK_UNPROVEN:
			return "KEK_UNPROVEN";
	}
	return NULL;
}

static RmgrData ade_rmgr = {
	.rm_name = "ade",
	.rm_redo = ade_rmgr_redo,
	.rm_desc = ade_rmgr_desc,
	.rm_identify = ade_rmgr_identify,
};

/* in _PG_init: only while the server preloads the library */
void
AdeKekWalRegister(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	RegisterCustomRmgr(ADE_RMGR_ID, &ade_rmgr);
	registered = true;
}

/*
 * Log the KEK, for the standbys.  Nothing on a standby, nor where the
 * manager is not registered (the library not preloaded: the record could
 * not be replayed anywhere that is so too).
 */
bool
AdeKekWalLog(const unsigned char *key, bool proven)
{
	if (!registered || !ade_replicate_key || RecoveryInProgress() || !XLogInsertAllowed())
		return false;
	XLogBeginInsert();
	XLogRegisterData((char *) key, ADE_KEK_LEN);
	(void) XLogInsert(ADE_RMGR_ID, proven ? XLOG_ADE_KEK : XLOG_ADE_KEK_UNPROVEN);
	return true;
}

/* whether the library was preloaded (ade_node_problem()) */
bool
AdeKekWalRegistered(void)
{
	return registered;
}
