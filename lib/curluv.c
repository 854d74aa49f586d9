#include "curluv.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <psa/crypto.h>

#include "fetch.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

enum {
  DEFAULT_TIMEOUT_MS = 120000,
  DEFAULT_CONNECT_TIMEOUT_MS = 10000,
  DEFAULT_MAX_BODY = 1 << 20,
  FIRST_CAP = 4096
};

struct stg_curluv_sock_s {
  uv_poll_t poll;
  curl_socket_t fd;
  ino_t ino; /* the socket behind fd (fd numbers are reused) */
  stg_curluv_t *c;
  stg_curluv_sock_t *next;
};

static void check_done(stg_curluv_t *c);
static void finish(stg_curluv_t *c, int err);

/* --- global init ------------------------------------------------------------- */

static uv_once_t global_once = UV_ONCE_INIT;
static int global_rc;

static void global_init(void) {
  /* mbedTLS 3.6 needs the PSA core for TLS 1.3; curl's global init is not
   * thread-safe, hence once. */
  if (psa_crypto_init() != PSA_SUCCESS) {
    global_rc = UV_EIO;
    return;
  }
  global_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : UV_ENOMEM;
}

/* --- handles --------------------------------------------------------------- */

static void wipe_free(char *s) {
  if (s == NULL)
    return;
  volatile char *p = s;
  while (*p)
    *p++ = '\0';
  free(s);
}

static void maybe_callback(stg_curluv_t *c) {
  if (!c->finishing || c->open_handles > 0)
    return;
  char empty[1] = "";
  char *body = c->body != NULL ? c->body : empty;
  size_t len = c->err == 0 ? c->len : 0;
  if (c->err != 0)
    body[0] = '\0';
  int err = c->err;
  long status = err == 0 ? c->status : 0;
  stg_curluv_cb cb = c->cb;
  c->active = false;
  /* The body lives until cb returns; c may be reused inside cb, so it is
   * detached first. */
  c->body = NULL;
  c->len = c->cap = 0;
  cb(c, err, status, body, len);
  if (body != empty)
    free(body);
}

static void on_handle_closed(uv_handle_t *h) {
  stg_curluv_t *c = h->data;
  if (h->type == UV_POLL)
    free(container_of((uv_poll_t *)h, stg_curluv_sock_t, poll));
  c->open_handles--;
  maybe_callback(c);
}

static stg_curluv_sock_t *sock_find(stg_curluv_t *c, curl_socket_t fd) {
  for (stg_curluv_sock_t *k = c->socks; k != NULL; k = k->next)
    if (k->fd == fd)
      return k;
  return NULL;
}

/* Stops watching k's fd at once (before anyone closes the fd) and closes
 * the handle; k is freed by the close callback. */
static void sock_close(stg_curluv_t *c, stg_curluv_sock_t *k) {
  for (stg_curluv_sock_t **p = &c->socks; *p != NULL; p = &(*p)->next) {
    if (*p == k) {
      *p = k->next;
      break;
    }
  }
  uv_poll_stop(&k->poll);
  uv_close((uv_handle_t *)&k->poll, on_handle_closed);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  stg_curluv_sock_t *k = container_of(h, stg_curluv_sock_t, poll);
  stg_curluv_t *c = k->c;
  curl_socket_t fd = k->fd;
  int flags = 0;
  if (status < 0) {
    uv_poll_stop(h); /* a bad fd: no busy loop; curl finds out */
    flags = CURL_CSELECT_ERR;
  } else {
    if (events & UV_READABLE)
      flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  }
  if (c->multi == NULL)
    return;
  int running;
  curl_multi_socket_action(c->multi, fd, flags, &running);
  check_done(c);
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
  (void)easy;
  (void)socketp;
  stg_curluv_t *c = userp;
  stg_curluv_sock_t *k = sock_find(c, s);
  if (what == CURL_POLL_REMOVE) {
    if (k != NULL)
      sock_close(c, k);
    return 0;
  }
  struct stat st;
  if (fstat(s, &st) < 0)
    st.st_ino = 0;
  if (k != NULL && k->ino != st.st_ino) {
    sock_close(c, k); /* closed behind our back and the number reused */
    k = NULL;
  }
  if (k == NULL) {
    if (c->finishing)
      return -1;
    k = calloc(1, sizeof *k);
    if (k == NULL)
      return -1;
    if (uv_poll_init_socket(c->loop, &k->poll, s) != 0) {
      free(k);
      return -1;
    }
    k->poll.data = c;
    k->fd = s;
    k->ino = st.st_ino;
    k->c = c;
    k->next = c->socks;
    c->socks = k;
    c->open_handles++;
  }
  int ev = 0;
  if (what & CURL_POLL_IN)
    ev |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    ev |= UV_WRITABLE;
  return uv_poll_start(&k->poll, ev, on_poll) == 0 ? 0 : -1;
}

/* curl closes a socket: its poll handle goes first, so epoll never watches
 * a number that is reused. */
static int on_closesocket(void *clientp, curl_socket_t fd) {
  stg_curluv_t *c = clientp;
  stg_curluv_sock_t *k = sock_find(c, fd);
  if (k != NULL)
    sock_close(c, k);
  return close(fd);
}

static void on_curl_timeout(uv_timer_t *t) {
  stg_curluv_t *c = container_of(t, stg_curluv_t, timer);
  if (c->multi == NULL)
    return;
  int running;
  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done(c);
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  stg_curluv_t *c = userp;
  if (c->finishing)
    return 0;
  if (timeout_ms < 0)
    uv_timer_stop(&c->timer);
  else
    uv_timer_start(&c->timer, on_curl_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

/* --- the body ---------------------------------------------------------------- */

static size_t on_write(char *buf, size_t size, size_t n, void *ud) {
  stg_curluv_t *c = ud;
  size_t add = size * n;
  if (add > c->max_body - c->len) {
    c->too_big = true;
    return 0; /* CURLE_WRITE_ERROR */
  }
  if (c->len + add + 1 > c->cap) {
    size_t nc = c->cap ? c->cap : FIRST_CAP;
    while (nc < c->len + add + 1)
      nc *= 2;
    if (nc > c->max_body + 1)
      nc = c->max_body + 1;
    char *nb = realloc(c->body, nc);
    if (nb == NULL)
      return 0;
    c->body = nb;
    c->cap = nc;
  }
  memcpy(c->body + c->len, buf, add);
  c->len += add;
  c->body[c->len] = '\0';
  return add;
}

/* --- finishing ------------------------------------------------------------- */

static int map_error(stg_curluv_t *c, CURLcode rc) {
  switch (rc) {
  case CURLE_OK:
    return 0;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return UV_EAI_NONAME;
  case CURLE_COULDNT_CONNECT:
    return UV_ECONNREFUSED;
  case CURLE_OPERATION_TIMEDOUT:
    /* The connect timeout and the overall one share the code. */
    return strncmp(c->curl_err, "Connection timed out", 20) == 0 ? UV_ECONNREFUSED
                                                                 : UV_ETIMEDOUT;
  case CURLE_WRITE_ERROR:
    return c->too_big ? UV_E2BIG : UV_ENOMEM;
  case CURLE_GOT_NOTHING:
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
  case CURLE_PARTIAL_FILE:
    return UV_ECONNRESET;
  case CURLE_OUT_OF_MEMORY:
    return UV_ENOMEM;
  default:
    return UV_EPROTO;
  }
}

static void transfer_done(stg_curluv_t *c, CURLcode rc) {
  curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &c->status);
  size_t el = strlen(c->curl_err);
  while (el > 0 && isspace((unsigned char)c->curl_err[el - 1]))
    c->curl_err[--el] = '\0';
  int err = map_error(c, rc);
  if (err == UV_E2BIG)
    snprintf(c->errmsg, sizeof c->errmsg, "response body over %zu bytes", c->max_body);
  else if (err != 0)
    snprintf(c->errmsg, sizeof c->errmsg, "%s",
             c->curl_err[0] ? c->curl_err : curl_easy_strerror(rc));
  finish(c, err);
}

static void check_done(stg_curluv_t *c) {
  CURLMsg *m;
  int left;
  while (c->multi != NULL && !c->finishing && (m = curl_multi_info_read(c->multi, &left)) != NULL) {
    if (m->msg == CURLMSG_DONE && m->easy_handle == c->easy)
      transfer_done(c, m->data.result);
  }
}

static void finish(stg_curluv_t *c, int err) {
  if (c->finishing)
    return;
  c->finishing = true;
  c->err = err;
  if (c->easy != NULL) {
    curl_multi_remove_handle(c->multi, c->easy);
    curl_easy_cleanup(c->easy);
    c->easy = NULL;
  }
  /* Cleanup closes pooled connections through on_closesocket, which closes
   * their poll handles; it may still touch the timer, so that goes last. */
  if (c->multi != NULL)
    curl_multi_cleanup(c->multi);
  c->multi = NULL;
  while (c->socks != NULL)
    sock_close(c, c->socks);
  curl_slist_free_all(c->headers);
  c->headers = NULL;
  wipe_free(c->auth);
  c->auth = NULL;
  free(c->req_body);
  c->req_body = NULL;
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

/* --- public ---------------------------------------------------------------- */

bool stg_curluv_active(const stg_curluv_t *c) { return c->active; }

const char *stg_curluv_errmsg(const stg_curluv_t *c) { return c->errmsg; }

void stg_curluv_cancel(stg_curluv_t *c) {
  if (!c->active || c->finishing)
    return;
  snprintf(c->errmsg, sizeof c->errmsg, "cancelled");
  finish(c, UV_ECANCELED);
}

int stg_curluv_start(uv_loop_t *loop, stg_curluv_t *c, const stg_curluv_options_t *o) {
  if (o == NULL || o->url == NULL || o->cb == NULL)
    return UV_EINVAL;
  bool https = strncasecmp(o->url, "https://", 8) == 0;
  if (!https && strncasecmp(o->url, "http://", 7) != 0)
    return UV_EINVAL;
  uv_once(&global_once, global_init);
  if (global_rc != 0)
    return global_rc;
  const char *ca = o->ca_file;
  if (https && (ca == NULL || *ca == '\0')) {
    ca = stg_fetch_default_ca_file();
    if (ca == NULL)
      return UV_ENOENT;
  }

  void *data = o->data;
  memset(c, 0, sizeof *c);
  c->data = data;
  c->loop = loop;
  c->cb = o->cb;
  c->max_body = o->max_body ? o->max_body : DEFAULT_MAX_BODY;
  uint64_t timeout = o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
  uint64_t ctimeout = o->connect_timeout_ms ? o->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
  if (ctimeout > timeout)
    ctimeout = timeout;
  const char *method = o->method ? o->method : o->body ? "POST" : "GET";

  int rc = UV_ENOMEM;
  char ct[160];
  snprintf(ct, sizeof ct, "Content-Type: %s",
           o->content_type ? o->content_type : "application/json");
  if (o->body != NULL) {
    c->req_body = malloc(o->body_len + 1);
    if (c->req_body == NULL)
      goto out;
    memcpy(c->req_body, o->body, o->body_len);
    c->req_body[o->body_len] = '\0';
  }
  struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
  if (h == NULL)
    goto out;
  c->headers = h;
  if (o->body != NULL && (h = curl_slist_append(c->headers, ct)) == NULL)
    goto out;
  if ((h = curl_slist_append(c->headers, "Expect:")) == NULL) /* no 100-continue wait */
    goto out;
  if (o->bearer != NULL && *o->bearer != '\0') {
    size_t n = strlen(o->bearer) + sizeof "Authorization: Bearer ";
    c->auth = malloc(n);
    if (c->auth == NULL)
      goto out;
    snprintf(c->auth, n, "Authorization: Bearer %s", o->bearer);
    if ((h = curl_slist_append(c->headers, c->auth)) == NULL)
      goto out;
  }
  c->multi = curl_multi_init();
  c->easy = curl_easy_init();
  if (c->multi == NULL || c->easy == NULL)
    goto out;
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);

  CURL *e = c->easy;
  curl_easy_setopt(e, CURLOPT_URL, o->url);
  curl_easy_setopt(e, CURLOPT_PRIVATE, c);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "stigmer");
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  if (strcmp(method, "HEAD") == 0)
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  if (c->req_body != NULL) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->req_body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
  }
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
  if (https) {
    curl_easy_setopt(e, CURLOPT_CAINFO, ca);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  }
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)ctimeout);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->curl_err);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_closesocket);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, c);

  rc = uv_timer_init(loop, &c->timer);
  if (rc < 0)
    goto out;
  c->timer.data = c;
  c->open_handles = 1;
  if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
    /* The timer is open and closes asynchronously: reported through cb. */
    c->active = true;
    snprintf(c->errmsg, sizeof c->errmsg, "curl_multi_add_handle failed");
    finish(c, UV_ENOMEM);
    return 0;
  }
  c->active = true;
  return 0;

out:
  if (c->easy != NULL)
    curl_easy_cleanup(c->easy);
  if (c->multi != NULL)
    curl_multi_cleanup(c->multi);
  curl_slist_free_all(c->headers);
  wipe_free(c->auth);
  free(c->req_body);
  memset(c, 0, sizeof *c);
  c->data = data;
  return rc;
}
