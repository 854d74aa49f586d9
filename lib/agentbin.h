/* The agent-runner binary on disk: extraction of the payload embedded in
 * this binary, the record file bin/agent-runner.json, pinning by
 * `stigmer agent-runner install`. Contract: docs/agent-runner.md.
 *
 * Every write is atomic: a temp file in bin/, fsync, chmod, rename over the
 * old file, fsync of the directory; the binary first, then the record. A
 * crash leaves the old file or the new one, never a torn one, and the next
 * ensure() repairs a binary without its record. Writers serialise on
 * bin/.agent-runner.lock (flock), so a CLI and the supervisor can race.
 */
#ifndef STG_AGENTBIN_H
#define STG_AGENTBIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef enum {
  STG_AGENTBIN_READY,  /* path names the binary to run */
  STG_AGENTBIN_MISSING /* nothing embedded, no usable binary: needs a fetch (or
                          a configured path / pinned binary is absent) */
} stg_agentbin_state_t;

/* An agent-runner payload: the one compiled in, or a test's. */
typedef struct {
  const unsigned char *data; /* the bytes; NULL when nothing is embedded */
  uint64_t size;             /* their length */
  const char *sha256;        /* 64 lowercase hex digits; "" when none */
  const char *origin;        /* build option: "reference", "path" or "none" */
} stg_agentbin_payload_t;

/* The payload embedded in this binary (data NULL, origin "none" in a slim
 * build). Never NULL. */
const stg_agentbin_payload_t *stg_agentbin_embedded(void);

typedef enum {
  /* Hash the file even when size, mtime, ctime and inode equal the record.
   * The supervisor sets it on its own start, not before each restart. */
  STG_AGENTBIN_FULL_CHECK = (1 << 0)
} stg_agentbin_flags_t;

typedef struct {
  unsigned flags;                        /* stg_agentbin_flags_t */
  const stg_agentbin_payload_t *payload; /* NULL: the embedded payload */
} stg_agentbin_options_t;

/* What bin/agent-runner.json says. */
typedef struct {
  char origin[16];   /* "embedded", "downloaded" or "installed" (pinned) */
  char version[128]; /* stigmer's version for embedded, the release's for
                        downloaded, --version or "unknown" for installed */
  uint64_t size;     /* bytes */
  char sha256[65];   /* lowercase hex */
  char when[32];     /* written at, RFC 3339 UTC */
  char source[512];  /* installed/downloaded: where it was copied from */
  int64_t mtime_ns;  /* the file's mtime, ctime, inode after the write: */
  int64_t ctime_ns;  /*   the cheap check compares these and the size */
  uint64_t inode;
} stg_agentbin_record_t;

/* Make sure the agent-runner at its path is the right one, extracting the
 * embedded payload when needed. Fills path (what to run), state, and a
 * one-line description of what was done or why it is missing ("extracted
 * embedded agent-runner (sha256 ab12..., 1.2 MiB): binary was missing").
 * Returns 0 or a negative error (a real failure, e.g. disk full, with the
 * reason in desc). A configured [agent-runner] path is used as is, never
 * written; MISSING when it does not exist. Always does the full check. */
int stg_agentbin_ensure(const stg_config_t *cfg, char *path, size_t pathlen,
                        stg_agentbin_state_t *state, char *desc, size_t desclen);

/* The same with options: without STG_AGENTBIN_FULL_CHECK, a file whose
 * size, mtime, ctime and inode equal the record is trusted unhashed (what
 * the supervisor does before each restart). opts may be NULL. */
int stg_agentbin_ensure_ex(const stg_config_t *cfg, const stg_agentbin_options_t *opts,
                           char *path, size_t pathlen, stg_agentbin_state_t *state,
                           char *desc, size_t desclen);

/* Copy src_path into place atomically and record it. origin "installed"
 * (pinned: extraction and fetching leave it alone until reset) or
 * "downloaded" (refused with UV_EBUSY while a pinned binary is installed).
 * version may be NULL ("unknown"). When sha256_hex is not NULL the copy must
 * hash to it (else UV_EINVAL, nothing replaced). UV_EPERM when
 * [agent-runner] path is configured. */
int stg_agentbin_install_file(const stg_config_t *cfg, const char *src_path,
                              const char *origin, const char *version,
                              const char *sha256_hex, char *desc, size_t desclen);

/* Unpin: remove bin/agent-runner and its record, then extract the payload
 * when one is embedded (state READY) or leave it for a fetch (MISSING).
 * UV_EPERM when [agent-runner] path is configured. opts may be NULL. */
int stg_agentbin_reset(const stg_config_t *cfg, const stg_agentbin_options_t *opts,
                       stg_agentbin_state_t *state, char *desc, size_t desclen);

/* The path the supervisor runs: [agent-runner] path, else
 * $STIGMER_HOME/bin/agent-runner. 0 or UV_ENAMETOOLONG. */
int stg_agentbin_path(const stg_config_t *cfg, char *buf, size_t len);

/* A read-only look at everything, for `stigmer agent-runner status`. */
typedef struct {
  char path[4096];          /* what the supervisor runs */
  bool configured;          /* [agent-runner] path is set */
  bool have_record;         /* bin/agent-runner.json was read */
  char record_error[256];   /* why it could not be read; "" when absent or fine */
  stg_agentbin_record_t record;
  bool exists;              /* a regular file at path */
  uint64_t size;            /* its size */
  char sha256[65];          /* its SHA-256; "" when missing */
  bool matches_record;      /* have_record and the content hashes to it */
  bool pinned;              /* the record's origin is "installed" */
  const stg_agentbin_payload_t *payload; /* what is embedded */
  stg_agentbin_state_t state; /* what ensure() would report */
  bool would_write;         /* ensure() would extract or rewrite the record */
  char plan[1024];          /* what ensure() would do, and why */
} stg_agentbin_status_t;

/* Fills st without changing anything (always hashes the file). 0 or a
 * negative error (an unreadable bin/, a failing read). opts may be NULL. */
int stg_agentbin_status(const stg_config_t *cfg, const stg_agentbin_options_t *opts,
                        stg_agentbin_status_t *st);

/* SHA-256 of a file as lowercase hex; also its size. 0 or -errno. */
int stg_agentbin_sha256_file(const char *path, char hex[65], uint64_t *size);

/* "812 B", "34.5 KiB", "1.2 MiB" */
void stg_agentbin_human_size(uint64_t n, char *buf, size_t len);

#endif
