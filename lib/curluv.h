/* stg_curluv: one HTTP(S) request on a uv loop, through libcurl.
 *
 * libcurl's multi-socket API driven by the caller's loop (stg_curlloop: one
 * uv_poll per socket curl watches, one uv_timer for curl's timeout), TLS by
 * mbedTLS. A request has a method, a URL, an optional body (JSON by
 * default), an optional bearer token, a timeout for the whole exchange, and
 * a response body kept in memory up to a cap. Each request has its own multi handle
 * (no connection reuse between requests). Contract: docs/internals/curluv.md.
 *
 * The caller must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)): TLS writes on a
 * socket the peer closed would otherwise kill the process. The module sets
 * CURLOPT_NOSIGNAL and never touches signals.
 */
#ifndef STG_CURLUV_H
#define STG_CURLUV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <uv.h>

#include "curlloop.h"

typedef struct stg_curluv_s stg_curluv_t;

/* Called exactly once, after every handle of the request is closed: c may
 * be freed or started again inside it.
 *   err     0 when a whole response arrived (whatever its status), else
 *           UV_ECONNREFUSED (connect refused or unreachable, connect
 *           timeout), UV_EAI_NONAME (name not resolved), UV_ETIMEDOUT (the
 *           whole exchange took longer than timeout_ms), UV_ECONNRESET (the
 *           connection broke: reset, closed early, nothing received),
 *           UV_EPROTO (TLS handshake or certificate, malformed response,
 *           anything else), UV_E2BIG (response body over max_body),
 *           UV_ECANCELED (stg_curluv_cancel). stg_curluv_errmsg() says more.
 *   status  the HTTP status, 0 when err != 0
 *   body    the response body, NUL-terminated, valid during the call only
 *           (never NULL; "" when empty or on error) */
typedef void (*stg_curluv_cb)(stg_curluv_t *c, int err, long status, const char *body,
                              size_t len);

/* Options of a request. Strings are copied; zero means the default. */
typedef struct {
  const char *url;            /* http:// or https:// URL */
  const char *method;         /* "GET", "POST", ...; NULL: POST with a body, else GET */
  const char *body;           /* request body, or NULL for none */
  size_t body_len;            /* its length in bytes */
  const char *content_type;   /* of the body; NULL: application/json */
  const char *bearer;         /* sent as "Authorization: Bearer <bearer>", or NULL;
                                 never logged, wiped from memory when done */
  const char *ca_file;        /* CA bundle (PEM) for https://, or NULL: found at run
                                 time by stg_fetch_default_ca_file() */
  uint64_t timeout_ms;        /* the whole exchange; 0: 2 min */
  uint64_t connect_timeout_ms; /* TCP connect + TLS handshake; 0: 10 s (never more
                                  than timeout_ms) */
  size_t max_body;            /* response body cap in bytes; 0: 1 MiB */
  stg_curluv_cb cb;           /* required */
  void *data;                 /* copied to c->data */
} stg_curluv_options_t;

/* One request. Caller-allocated; the fields are private except data. */
struct stg_curluv_s {
  void *data;                 /* caller's pointer, from options.data */
  /* private */
  stg_curlloop_t cl;          /* its own multi handle on the loop */
  stg_curlloop_xfer_t xfer;   /* the request's transfer on cl */
  CURL *easy;
  struct curl_slist *headers;
  char *req_body;             /* copy of the request body */
  char *auth;                 /* the Authorization header line */
  char *body;                 /* the response body, grown up to max_body */
  size_t len, cap, max_body;
  bool too_big;               /* the write callback refused more */
  bool finishing;             /* finish() ran: waiting for the handles */
  bool active;                /* between a successful start and the callback */
  int err;
  long status;
  stg_curluv_cb cb;
  char errmsg[CURL_ERROR_SIZE + 64];
  char curl_err[CURL_ERROR_SIZE];
};

/* Starts the request. Returns 0 (cb will be called), or a negative error and
 * cb will not be called: UV_EINVAL (no URL or cb, a scheme other than http or
 * https), UV_ENOENT (https:// and no CA bundle found), UV_ENOMEM, UV_EIO
 * (TLS library init failed). A failure after the start (even one found
 * at once) is reported through cb. */
int stg_curluv_start(uv_loop_t *loop, stg_curluv_t *c, const stg_curluv_options_t *o);

/* Aborts a started request: cb runs with UV_ECANCELED once every handle is
 * closed (asynchronously). A no-op when the request is not active or is
 * already finishing. Not to be called from inside curl's own callbacks. */
void stg_curluv_cancel(stg_curluv_t *c);

/* True between a successful stg_curluv_start and the start of cb. */
bool stg_curluv_active(const stg_curluv_t *c);

/* A line on the last failure, e.g. "Failed to connect to 127.0.0.1 port 9:
 * Connection refused", "" when none; valid during cb and until the next
 * start. Never contains the bearer token. */
const char *stg_curluv_errmsg(const stg_curluv_t *c);

#endif
