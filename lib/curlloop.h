/* stg_curlloop: a libcurl multi handle driven by a uv loop.
 *
 * libcurl's multi-socket API on the caller's loop: one uv_poll per socket
 * curl watches (CURLMOPT_SOCKETFUNCTION), one uv_timer for curl's timeout
 * (CURLMOPT_TIMERFUNCTION). Sockets curl closes lose their poll handle
 * first (CURLOPT_CLOSESOCKETFUNCTION), a watched fd number reused for a new
 * socket is noticed (inode check), and a poll error (UV_EBADF) stops the
 * poll instead of spinning. Finished transfers are handed back one by one.
 * The caller makes the easy handles (URL, callbacks, TLS) and owns them.
 * Used by stg_fetch and stg_curluv. Contract: docs/internals/curlloop.md.
 */
#ifndef STG_CURLLOOP_H
#define STG_CURLLOOP_H

#include <stdbool.h>

#include <curl/curl.h>
#include <uv.h>

typedef struct stg_curlloop_s stg_curlloop_t;
typedef struct stg_curlloop_xfer_s stg_curlloop_xfer_t;
typedef struct stg_curlloop_sock_s stg_curlloop_sock_t;

/* A transfer finished (curl's CURLMSG_DONE). x->easy is already out of the
 * multi handle and still the caller's: inspect it (curl_easy_getinfo), then
 * clean it up or add it again. The callback may add or remove transfers
 * and may close the loop. */
typedef void (*stg_curlloop_done_cb)(stg_curlloop_xfer_t *x, CURLcode result);

/* Every uv handle of the loop object is closed: l may be freed inside. */
typedef void (*stg_curlloop_close_cb)(stg_curlloop_t *l);

/* One transfer on a loop object. Caller-allocated (usually embedded in the
 * caller's struct, recovered with container_of); valid from a successful
 * stg_curlloop_add until its done callback starts, stg_curlloop_remove, or
 * stg_curlloop_close. The fields are private except data. */
struct stg_curlloop_xfer_s {
  void *data;                 /* the caller's */
  /* private */
  CURL *easy;
  stg_curlloop_t *l;
  stg_curlloop_done_cb done;
  stg_curlloop_xfer_t *next;  /* l's list of transfers */
};

/* The multi handle and its uv handles. Caller-allocated; the fields are
 * private except data. Free only after the close callback. */
struct stg_curlloop_s {
  void *data;                 /* the caller's */
  /* private */
  uv_loop_t *loop;
  uv_timer_t timer;           /* curl's timeout (CURLMOPT_TIMERFUNCTION) */
  CURLM *multi;               /* NULL once closing */
  stg_curlloop_sock_t *socks; /* one uv_poll per socket curl watches */
  stg_curlloop_xfer_t *xfers; /* added and not finished */
  int open_handles;           /* the timer and the polls not yet closed */
  bool closing;               /* stg_curlloop_close ran */
  stg_curlloop_close_cb close_cb;
};

/* Process-wide init, once (later calls return the first result): the PSA
 * crypto core (mbedTLS TLS 1.3, PSA-backed hashes) and curl_global_init.
 * Returns 0, UV_EIO (PSA) or UV_ENOMEM (curl). stg_curlloop_init calls it. */
int stg_curlloop_global_init(void);

/* Makes the multi handle and the timer. Returns 0, or UV_ENOMEM, UV_EIO, or
 * uv_timer_init's error; on failure nothing is left to close. data is kept. */
int stg_curlloop_init(uv_loop_t *loop, stg_curlloop_t *l);

/* Starts easy on l: sets its CURLOPT_PRIVATE (to x) and
 * CURLOPT_CLOSESOCKETFUNCTION/DATA, which the caller must not override.
 * done runs once when it finishes, from a loop callback (never from inside
 * this call). Returns 0, UV_EINVAL (l is closing, or no easy or done), or
 * UV_ENOMEM (curl_multi_add_handle failed; easy is still the caller's). */
int stg_curlloop_add(stg_curlloop_t *l, stg_curlloop_xfer_t *x, CURL *easy,
                     stg_curlloop_done_cb done);

/* Takes an added transfer out of the multi handle without calling done; a
 * no-op when it is not on a loop. x->easy stays the caller's. Not to be
 * called from inside curl's own callbacks (write, header, progress). */
void stg_curlloop_remove(stg_curlloop_xfer_t *x);

/* Removes every transfer still added (their done is not called; the easy
 * handles stay the caller's), cleans up the multi handle (closing pooled
 * connections), and closes the uv handles; cb runs once they are all closed
 * (asynchronously, never from inside this call). Calling it again is a
 * no-op. Not to be called from inside curl's own callbacks. */
void stg_curlloop_close(stg_curlloop_t *l, stg_curlloop_close_cb cb);

/* True between a successful stg_curlloop_add and the start of its done,
 * stg_curlloop_remove or stg_curlloop_close. */
bool stg_curlloop_active(const stg_curlloop_xfer_t *x);

#endif
