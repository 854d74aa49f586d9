#include "curluv.h"

#include <ctype.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

static void finish(stg_curluv_t *c, int err);

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
  if (!c->finishing)
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

/* Every uv handle of the request is closed. */
static void on_loop_closed(stg_curlloop_t *l) {
  maybe_callback(container_of(l, stg_curluv_t, cl));
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

static void on_transfer_done(stg_curlloop_xfer_t *x, CURLcode rc) {
  transfer_done(container_of(x, stg_curluv_t, xfer), rc);
}

static void finish(stg_curluv_t *c, int err) {
  if (c->finishing)
    return;
  c->finishing = true;
  c->err = err;
  if (c->easy != NULL) {
    stg_curlloop_remove(&c->xfer);
    curl_easy_cleanup(c->easy);
    c->easy = NULL;
  }
  /* Closes the pooled connections, their poll handles, and the timer;
   * cb runs from on_loop_closed. */
  stg_curlloop_close(&c->cl, on_loop_closed);
  curl_slist_free_all(c->headers);
  c->headers = NULL;
  wipe_free(c->auth);
  c->auth = NULL;
  free(c->req_body);
  c->req_body = NULL;
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
  int rc = stg_curlloop_global_init();
  if (rc != 0)
    return rc;
  const char *ca = o->ca_file;
  if (https && (ca == NULL || *ca == '\0')) {
    ca = stg_fetch_default_ca_file();
    if (ca == NULL)
      return UV_ENOENT;
  }

  void *data = o->data;
  memset(c, 0, sizeof *c);
  c->data = data;
  c->cb = o->cb;
  c->max_body = o->max_body ? o->max_body : DEFAULT_MAX_BODY;
  uint64_t timeout = o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
  uint64_t ctimeout = o->connect_timeout_ms ? o->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
  if (ctimeout > timeout)
    ctimeout = timeout;
  const char *method = o->method ? o->method : o->body ? "POST" : "GET";

  rc = UV_ENOMEM;
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
  c->easy = curl_easy_init();
  if (c->easy == NULL)
    goto out;

  CURL *e = c->easy;
  curl_easy_setopt(e, CURLOPT_URL, o->url);
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

  /* CURLOPT_PRIVATE and the close-socket callback belong to stg_curlloop. */
  rc = stg_curlloop_init(loop, &c->cl);
  if (rc < 0)
    goto out;
  if (stg_curlloop_add(&c->cl, &c->xfer, e, on_transfer_done) != 0) {
    /* The loop's handles are open and close asynchronously: reported
     * through cb. */
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
  curl_slist_free_all(c->headers);
  wipe_free(c->auth);
  free(c->req_body);
  memset(c, 0, sizeof *c);
  c->data = data;
  return rc;
}
