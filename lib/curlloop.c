/* stg_curlloop: a libcurl multi handle driven by a uv loop.
 * Contract: docs/internals/curlloop.md. */
#include "curlloop.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <psa/crypto.h>

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

struct stg_curlloop_sock_s {
  uv_poll_t poll;
  curl_socket_t fd;
  ino_t ino; /* identifies the socket behind fd (fd numbers are reused) */
  stg_curlloop_t *l;
  stg_curlloop_sock_t *next;
};

static void check_done(stg_curlloop_t *l);

/* --- global init ---------------------------------------------------------------- */

static uv_once_t global_once = UV_ONCE_INIT;
static int global_rc;

static void global_init(void) {
  /* mbedTLS's TLS 1.3 and PSA-backed hashes need the PSA core; curl's
   * global init is not thread-safe, hence once. */
  if (psa_crypto_init() != PSA_SUCCESS) {
    global_rc = UV_EIO;
    return;
  }
  global_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : UV_ENOMEM;
}

int stg_curlloop_global_init(void) {
  uv_once(&global_once, global_init);
  return global_rc;
}

/* --- sockets and the timer ------------------------------------------------------ */

static void maybe_closed(stg_curlloop_t *l) {
  if (!l->closing || l->open_handles > 0 || l->close_cb == NULL)
    return;
  stg_curlloop_close_cb cb = l->close_cb;
  l->close_cb = NULL;
  cb(l); /* last: l may be freed */
}

static void on_handle_closed(uv_handle_t *h) {
  stg_curlloop_t *l = h->data;
  if (h->type == UV_POLL)
    free(container_of((uv_poll_t *)h, stg_curlloop_sock_t, poll));
  l->open_handles--;
  maybe_closed(l);
}

static stg_curlloop_sock_t *sock_find(stg_curlloop_t *l, curl_socket_t fd) {
  for (stg_curlloop_sock_t *k = l->socks; k != NULL; k = k->next)
    if (k->fd == fd)
      return k;
  return NULL;
}

/* Stops watching k's fd now (epoll forgets it before anyone closes the fd)
 * and closes the handle; k is freed by the close callback. */
static void sock_close(stg_curlloop_t *l, stg_curlloop_sock_t *k) {
  for (stg_curlloop_sock_t **p = &l->socks; *p != NULL; p = &(*p)->next) {
    if (*p == k) {
      *p = k->next;
      break;
    }
  }
  uv_poll_stop(&k->poll);
  uv_close((uv_handle_t *)&k->poll, on_handle_closed);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  stg_curlloop_sock_t *k = container_of(h, stg_curlloop_sock_t, poll);
  stg_curlloop_t *l = k->l;
  curl_socket_t fd = k->fd;
  int flags = 0;
  if (status < 0) {
    /* UV_EBADF and friends: the fd went bad under us. Stop polling it (no
     * busy loop) and let curl find out; it asks again if it still cares. */
    uv_poll_stop(h);
    flags = CURL_CSELECT_ERR;
  } else {
    if (events & UV_READABLE)
      flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  }
  if (l->multi == NULL)
    return;
  int running;
  curl_multi_socket_action(l->multi, fd, flags, &running);
  check_done(l);
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
  (void)easy;
  (void)socketp;
  stg_curlloop_t *l = userp;
  stg_curlloop_sock_t *k = sock_find(l, s);
  if (what == CURL_POLL_REMOVE) {
    if (k != NULL)
      sock_close(l, k);
    return 0;
  }
  struct stat st;
  if (fstat(s, &st) < 0)
    st.st_ino = 0;
  if (k != NULL && k->ino != st.st_ino) {
    /* The socket k watched was closed without telling us and its number
     * reused: drop the stale watcher before watching the new socket. */
    sock_close(l, k);
    k = NULL;
  }
  if (k == NULL) {
    if (l->closing)
      return -1;
    k = calloc(1, sizeof *k);
    if (k == NULL)
      return -1;
    if (uv_poll_init_socket(l->loop, &k->poll, s) != 0) {
      free(k);
      return -1;
    }
    k->poll.data = l;
    k->fd = s;
    k->ino = st.st_ino;
    k->l = l;
    k->next = l->socks;
    l->socks = k;
    l->open_handles++;
  }
  int ev = 0;
  if (what & CURL_POLL_IN)
    ev |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    ev |= UV_WRITABLE;
  return uv_poll_start(&k->poll, ev, on_poll) == 0 ? 0 : -1;
}

/* curl closes a socket: stop its poll handle first (a uv_poll must never
 * outlive its fd, or epoll would watch a reused number), then close. */
static int on_closesocket(void *clientp, curl_socket_t fd) {
  stg_curlloop_t *l = clientp;
  stg_curlloop_sock_t *k = sock_find(l, fd);
  if (k != NULL)
    sock_close(l, k);
  return close(fd);
}

static void on_curl_timeout(uv_timer_t *t) {
  stg_curlloop_t *l = container_of(t, stg_curlloop_t, timer);
  if (l->multi == NULL)
    return;
  int running;
  curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done(l);
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  stg_curlloop_t *l = userp;
  if (l->closing)
    return 0; /* the timer is closed or about to be */
  if (timeout_ms < 0)
    uv_timer_stop(&l->timer);
  else
    uv_timer_start(&l->timer, on_curl_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

/* --- transfers ------------------------------------------------------------------- */

static void xfer_unlink(stg_curlloop_xfer_t *x) {
  stg_curlloop_t *l = x->l;
  for (stg_curlloop_xfer_t **p = &l->xfers; *p != NULL; p = &(*p)->next) {
    if (*p == x) {
      *p = x->next;
      break;
    }
  }
  x->next = NULL;
  x->l = NULL;
}

static void check_done(stg_curlloop_t *l) {
  CURLMsg *m;
  int left;
  while (l->multi != NULL && !l->closing && (m = curl_multi_info_read(l->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE)
      continue;
    CURL *easy = m->easy_handle;
    CURLcode result = m->data.result; /* m dies with the removal */
    char *priv = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
    stg_curlloop_xfer_t *x = (stg_curlloop_xfer_t *)(void *)priv;
    curl_multi_remove_handle(l->multi, easy);
    if (x == NULL || x->l != l || x->easy != easy)
      continue; /* not ours: cannot happen through this API */
    xfer_unlink(x);
    x->done(x, result);
  }
}

bool stg_curlloop_active(const stg_curlloop_xfer_t *x) { return x->l != NULL; }

int stg_curlloop_add(stg_curlloop_t *l, stg_curlloop_xfer_t *x, CURL *easy,
                     stg_curlloop_done_cb done) {
  if (l->closing || l->multi == NULL || easy == NULL || done == NULL)
    return UV_EINVAL;
  curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
  curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, on_closesocket);
  curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, l);
  if (curl_multi_add_handle(l->multi, easy) != CURLM_OK)
    return UV_ENOMEM;
  x->easy = easy;
  x->l = l;
  x->done = done;
  x->next = l->xfers;
  l->xfers = x;
  return 0;
}

void stg_curlloop_remove(stg_curlloop_xfer_t *x) {
  stg_curlloop_t *l = x->l;
  if (l == NULL)
    return;
  if (l->multi != NULL)
    curl_multi_remove_handle(l->multi, x->easy);
  xfer_unlink(x);
}

/* --- init and close -------------------------------------------------------------- */

int stg_curlloop_init(uv_loop_t *loop, stg_curlloop_t *l) {
  int rc = stg_curlloop_global_init();
  if (rc != 0)
    return rc;
  void *data = l->data;
  memset(l, 0, sizeof *l);
  l->data = data;
  l->loop = loop;
  l->multi = curl_multi_init();
  if (l->multi == NULL)
    return UV_ENOMEM;
  rc = uv_timer_init(loop, &l->timer);
  if (rc < 0) {
    curl_multi_cleanup(l->multi);
    l->multi = NULL;
    return rc;
  }
  l->timer.data = l;
  l->open_handles = 1;
  curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l);
  curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l);
  return 0;
}

void stg_curlloop_close(stg_curlloop_t *l, stg_curlloop_close_cb cb) {
  if (l->closing)
    return;
  l->closing = true;
  l->close_cb = cb;
  while (l->xfers != NULL)
    stg_curlloop_remove(l->xfers);
  /* Cleanup closes pooled connections through on_closesocket, which closes
   * their poll handles; the timer goes last (on_timer ignores it now). */
  if (l->multi != NULL)
    curl_multi_cleanup(l->multi);
  l->multi = NULL;
  while (l->socks != NULL)
    sock_close(l, l->socks);
  uv_close((uv_handle_t *)&l->timer, on_handle_closed);
}
