/* stg_fetch: a verified, resumable, asynchronous download on a uv loop.
 *
 * libcurl's multi-socket API driven by the loop (stg_curlloop: uv_poll per
 * socket, one uv_timer for curl's timeout), TLS by mbedTLS. The body streams into
 * "<dest>.partial" and is hashed (SHA-256) as it is written; it is checked
 * against the expected digest (given, or read from "<url>.sha256"), and
 * optionally against an ECDSA P-256 signature ("<url>.sig"), then fsynced and
 * renamed to <dest>. An unverified file never appears at <dest>.
 *
 * Contract, the retry/fatal table, CA probing and proxies:
 * docs/internals/fetch.md.
 *
 * The caller must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) before starting
 * a fetch: TLS writes on a socket the peer closed would otherwise kill the
 * process. The module sets CURLOPT_NOSIGNAL and never touches signals.
 */
#ifndef STG_FETCH_H
#define STG_FETCH_H

#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <uv.h>

#include "curlloop.h"
#include "sha256.h"

typedef struct stg_fetch_s stg_fetch_t;

/* Why an attempt failed. */
typedef enum {
  STG_FETCH_E_DNS = 1,        /* name resolution (host or proxy) */
  STG_FETCH_E_CONNECT,        /* connect refused, unreachable, connect timeout, proxy */
  STG_FETCH_E_TLS,            /* handshake or certificate problem (named in the reason) */
  STG_FETCH_E_HTTP,           /* an HTTP status other than 200/206 */
  STG_FETCH_E_NETWORK,        /* connection reset or closed before the end of the body */
  STG_FETCH_E_CHECKSUM,       /* digest mismatch, or an unreadable .sha256 */
  STG_FETCH_E_SIGNATURE,      /* .sig missing (404/410) or does not verify: fatal */
  STG_FETCH_E_TOO_BIG,        /* body over max_size: fatal */
  STG_FETCH_E_WRITE,          /* disk full or another local file error */
  STG_FETCH_E_STALLED,        /* below low_speed_limit for low_speed_time_ms */
  STG_FETCH_E_REDIRECTS,      /* more than 5 redirects */
  STG_FETCH_E_INSECURE_REDIRECT /* https -> http redirect refused: fatal */
} stg_fetch_error_t;

/* Options for stg_fetch_start. Strings are copied; zero means the default. */
typedef struct {
  const char *url;        /* https:// URL of the file (http:// only with allow_http) */
  const char *sha256_hex; /* expected digest (64 hex digits), or NULL: fetch <url>.sha256
                             ("<hex>  <name>" or just "<hex>") on every attempt */
  const char *public_key; /* PEM file with an ECDSA P-256 public key, or NULL: no
                             signature check. When set, <url>.sig (DER ECDSA-Sig-Value
                             over SHA-256 of the file) is required and must verify */
  const char *dest;       /* final path; the body goes to <dest>.partial and the resume
                             validator to <dest>.partial.validator */
  unsigned mode;          /* permissions of the installed file (0: 0644; 0755 for a
                             program). The directory of dest must exist */
  const char *ca_file;    /* CA bundle (PEM), or NULL: $SSL_CERT_FILE, $CURL_CA_BUNDLE,
                             then the standard locations (see fetch.md) */
  bool allow_http;        /* accept http:// (a local mirror) and https->http redirects */
  uint64_t max_size;      /* largest body accepted, bytes (0: 1 GiB) */
  uint64_t connect_timeout_ms; /* per connection attempt (0: 10 s) */
  uint64_t low_speed_limit;    /* bytes/s under which a transfer counts as stalled
                                  (0: 1024) */
  uint64_t low_speed_time_ms;  /* ... for this long, rounded up to whole seconds
                                  (curl's unit; 0: 30 s) */
  uint64_t retry_initial_ms;   /* first retry delay, doubled per failure (0: 1 s) */
  uint64_t retry_max_ms;       /* cap on the retry delay (0: 5 min) */
  unsigned max_attempts;       /* attempts in all, 0: retry forever */
  /* Transfer progress of the file itself (not the .sha256/.sig): bytes on disk
   * so far (including a resumed prefix), the total or 0 if unknown, and a
   * smoothed rate in bytes/s. At most every 100 ms. May be NULL. */
  void (*progress)(stg_fetch_t *f, uint64_t done, uint64_t total, double rate);
  /* Each failed attempt: its class, a message naming what failed and why,
   * whether another attempt follows and after how long. NULL: the message
   * goes to stg_log (warn, or error when final). */
  void (*failure)(stg_fetch_t *f, stg_fetch_error_t kind, const char *reason, bool will_retry,
                  uint64_t retry_in_ms);
  /* Called exactly once, last, after every handle of f is closed: f may be
   * freed inside it. status: 0 (the file is at dest, sha256_hex is its
   * digest), UV_ECANCELED after stg_fetch_cancel, or the error of the last
   * failure (see stg_fetch_error_status); sha256_hex is NULL then. */
  void (*done)(stg_fetch_t *f, int status, const char *sha256_hex);
  void *data; /* for the caller; copied to f->data */
} stg_fetch_options_t;

/* One download. Caller-allocated; the fields are private except data. */
struct stg_fetch_s {
  void *data; /* caller's pointer, from options.data */
  /* private */
  uv_loop_t *loop;
  stg_curlloop_t cl;      /* the multi handle on the loop, kept across attempts */
  stg_curlloop_xfer_t xfer; /* the current transfer on cl */
  uv_timer_t retry_timer; /* backoff between attempts, deferred cancel */
  CURL *easy;             /* current transfer, or NULL */
  int open_handles;       /* retry_timer and cl not yet closed; done runs at 0 */
  int step;               /* what the current transfer fetches */
  bool cancelled, finishing, have_key, resuming, restarted;
  int final_status;
  stg_fetch_options_t o;  /* with owned copies of the strings below */
  char *url, *dest, *partial, *validator, *ca_file, *sum_url, *sig_url;
  char expected[65];      /* digest to match: option, or from .sha256 */
  bool fixed_digest;      /* expected came from the options */
  unsigned attempts;      /* failed attempts so far */
  mbedtls_pk_context key;
  stg_sha256_t sha;       /* of the body as it streams */
  int fd;                 /* the .partial, or -1 */
  uint64_t offset;        /* bytes on disk before this transfer's body */
  uint64_t received;      /* bytes of this transfer's body */
  uint64_t total;         /* expected size of the whole file, or 0 */
  long status;            /* HTTP status of the last response header block */
  bool body_started;      /* the final response's body decision is made */
  char etag[256], last_modified[128], content_range[128];
  bool http_location;     /* a 3xx of this transfer pointed at http:// */
  int write_errno;        /* errno of the last local file error */
  struct curl_slist *headers; /* If-Range */
  unsigned char sum[4096]; /* .sha256 body */
  unsigned char sig[512];  /* .sig body */
  size_t small_len;       /* bytes in sum or sig during its transfer */
  size_t sig_len;
  char result[65];        /* the verified digest */
  stg_fetch_error_t err;  /* set by a callback that aborted the transfer */
  char err_reason[512];
  char curl_err[CURL_ERROR_SIZE];
  uint64_t progress_at;   /* uv_hrtime of the last progress call */
  uint64_t rate_bytes;    /* bytes at progress_at */
  double rate;            /* smoothed bytes/s */
};

/* Starts downloading. Returns 0, or a negative error and then no callback
 * runs and nothing needs closing: UV_EINVAL (bad options, a key that is not
 * ECDSA P-256, an http:// URL without allow_http), UV_ENOENT (no CA bundle
 * found, or the key file is missing), UV_ENOMEM. */
int stg_fetch_start(uv_loop_t *loop, stg_fetch_t *f, const stg_fetch_options_t *o);

/* Stops the fetch: the transfer is aborted (the .partial is kept for a later
 * resume), every handle is closed, then done runs with UV_ECANCELED.
 * Asynchronous; safe from any callback of f; a no-op once the fetch is
 * finishing. Only for a fetch that started (stg_fetch_start returned 0)
 * and whose done has not run yet. */
void stg_fetch_cancel(stg_fetch_t *f);

/* "dns", "connect", "tls", "http", "network", "checksum", "signature",
 * "too-big", "write", "stalled", "redirects", "insecure-redirect". */
const char *stg_fetch_error_name(stg_fetch_error_t kind);

/* Whether a failure of this kind is retried (see fetch.md). */
bool stg_fetch_error_retried(stg_fetch_error_t kind);

/* The done status for a final failure of this kind: UV_EAI_NONAME (dns),
 * UV_ECONNREFUSED (connect), UV_EPROTO (tls, http, network,
 * redirects, insecure-redirect), UV_EINVAL (checksum), -EBADMSG
 * (signature), UV_EFBIG (too-big), UV_EIO (write), UV_ETIMEDOUT (stalled). */
int stg_fetch_error_status(stg_fetch_error_t kind);

/* The CA bundle stg_fetch would use when ca_file is NULL, or NULL. */
const char *stg_fetch_default_ca_file(void);

#endif
