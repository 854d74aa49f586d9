/* stg_agentfetch: fetching the agent-runner when nothing embedded can serve.
 *
 * The glue between the configuration, lib/fetch (the verified download) and
 * lib/agentbin (the installed binary and its record), shared by the
 * supervisor and `stigmer agent-runner fetch`:
 *
 *   - which version (the configured [agent-runner] version, else this
 *     build's release version; a development build without one cannot
 *     fetch) and the URL (the [agent-runner] url template);
 *   - the cache, $STIGMER_HOME/cache/agent-runner/<version>/agent-runner,
 *     with its verified digest in agent-runner.sha256 next to it (written
 *     after the download verified); the download goes there, resumable;
 *   - installing from the cache into bin/ (origin "downloaded"), after
 *     re-hashing the cached file against that digest; with a public_key
 *     configured, only a download whose signature that key checked (the
 *     sidecar names the key's digest).
 *
 * Contract: docs/agent-runner.md ("Fetching").
 */
#ifndef STG_AGENTFETCH_H
#define STG_AGENTFETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "fetch.h"

/* What a fetch for this configuration would get, and where it goes. */
typedef struct {
  char version[128]; /* the release fetched */
  char url[4096];    /* the [agent-runner] url template, expanded */
  char dir[4096];    /* $STIGMER_HOME/cache/agent-runner/<version> */
  char file[4200];   /* dir/agent-runner: the download's destination */
  char sidecar[4300]; /* dir/agent-runner.sha256: its verified digest */
} stg_agentfetch_plan_t;

/* Fills p for cfg. Returns 0, or a negative error with a plain sentence in
 * why that says what to do instead:
 *   UV_ENOTSUP  a development build (not a release version) and no
 *               [agent-runner] version configured;
 *   UV_EPERM    [agent-runner] path is configured (never written);
 *   UV_EBUSY    a pinned agent-runner is installed (`agent-runner install`);
 *   UV_EINVAL   a version unusable in a path, or an unknown {placeholder}
 *               in the url template;
 *   UV_ENAMETOOLONG. */
int stg_agentfetch_plan(const stg_config_t *cfg, stg_agentfetch_plan_t *p, char *why,
                        size_t whylen);

/* Installs the cached download of p->version into bin/ (origin
 * "downloaded") when there is a verified one: the cached file is hashed and
 * must match its sidecar (and [agent-runner] sha256 when that pins one).
 * Returns 0 (installed; desc says so), 1 (no usable cache entry; desc says
 * why), or a negative error (desc names it; UV_EBUSY: pinned meanwhile). */
int stg_agentfetch_install_cached(const stg_config_t *cfg, const stg_agentfetch_plan_t *p,
                                  char *desc, size_t desclen);

typedef struct stg_agentfetch_s stg_agentfetch_t;

/* Options for stg_agentfetch_start. */
typedef struct {
  const stg_config_t *cfg;           /* read during the call only: sha256,
                                        public_key, allow_http, ca_file, max_size */
  const stg_agentfetch_plan_t *plan; /* from stg_agentfetch_plan; copied */
  uint64_t retry_initial_ms;         /* first retry delay (0: 1 s), doubled... */
  uint64_t retry_max_ms;             /* ... up to this (0: 5 min) */
  unsigned max_attempts;             /* attempts in all; 0: retry for ever */
  /* The download advanced: af->bytes, af->total, af->rate are fresh. At most
   * every 100 ms. May be NULL. */
  void (*progress)(stg_agentfetch_t *af);
  /* An attempt failed: why (also in af->last_error), whether another
   * follows and when. May be NULL. */
  void (*failure)(stg_agentfetch_t *af, const char *reason, bool will_retry,
                  uint64_t retry_in_ms);
  /* Exactly once, last; af may be freed inside. status 0: the verified file
   * is in the cache (plan.file, digest in plan.sidecar) and
   * stg_agentfetch_install_cached installs it; UV_ECANCELED after
   * stg_agentfetch_cancel; else the final failure's error. */
  void (*done)(stg_agentfetch_t *af, int status);
  void *data; /* for the caller; copied to af->data */
} stg_agentfetch_options_t;

/* One fetch of the agent-runner. Caller-allocated. */
struct stg_agentfetch_s {
  void *data; /* the caller's, from options.data */
  /* Read-only for the caller, current as of the last callback: */
  stg_agentfetch_plan_t plan;
  uint64_t bytes;          /* of the file, on disk (a resumed prefix included) */
  uint64_t total;          /* its size when known, else 0 */
  double rate;             /* bytes/s, smoothed */
  unsigned attempts;       /* failed attempts so far */
  char last_error[512];    /* the last failure's reason, "" if none */
  bool waiting;            /* between a failure and the next attempt */
  uint64_t retry_at;       /* uv_now() of the next attempt while waiting */
  /* private */
  stg_fetch_t fetch;
  stg_agentfetch_options_t o;
  int lock_fd;             /* flock on <dir>/.lock while downloading */
  char key[65];            /* SHA-256 of the public key file, "" without one */
};

/* Creates the cache directory and starts the download into it, holding
 * <dir>/.lock (flock) until done, so two processes never write the same
 * download. Returns 0, or a negative error and then no callback runs (desc
 * says why): stg_fetch_start's errors, a cache directory that cannot be
 * made, UV_EBUSY when another process is downloading this version. */
int stg_agentfetch_start(uv_loop_t *loop, stg_agentfetch_t *af,
                         const stg_agentfetch_options_t *o, char *desc, size_t desclen);

/* Aborts: done runs later with UV_ECANCELED (the partial download is kept
 * for a resume). Safe from any callback; a no-op once finishing. */
void stg_agentfetch_cancel(stg_agentfetch_t *af);

/* "1.2 MiB / 3.4 MiB (35%), 210.0 KiB/s" or, without a total,
 * "1.2 MiB, 210.0 KiB/s". */
void stg_agentfetch_format_progress(uint64_t bytes, uint64_t total, double rate, char *buf,
                                    size_t len);

/* Each cached version: for `stigmer agent-runner status`. Calls fn once per
 * directory under cache/agent-runner/ (sorted by name) with what is there:
 * size 0 and sha256 "" when no verified file, partial the bytes of a
 * .partial in progress. Returns 0 (also when there is no cache) or a
 * negative error. */
typedef void (*stg_agentfetch_cache_fn)(const char *version, uint64_t size,
                                        const char *sha256, uint64_t partial, void *arg);
int stg_agentfetch_cache_list(const stg_config_t *cfg, stg_agentfetch_cache_fn fn, void *arg);

#endif
