/* One HTTP exchange with the API server, retried with backoff while the
 * server cannot be reached (the supervisor restarts it). Each attempt uses
 * its own connection (stg_http_request). */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "utf8.h"
#include "wfr.h"

enum {
  RETRY_INITIAL_MS = 50,
  RETRY_MAX_MS = 2000,
  LOG_EVERY = 15, /* at the cap, a reminder every this many attempts (~30 s) */
  MAX_REPLY = 8u << 20
};

static void on_reply(stg_http_request_t *h, int err, int status, const char *body, size_t len);

static void finish(stg__wfr_call_t *c, int err, int status, json_t *body) {
  c->busy = false;
  c->in_http = false;
  c->cb(c, err, status, body);
}

static void attempt(stg__wfr_call_t *c) {
  stg_http_request_options_t o = {
      .addr = c->server,
      .path = c->path,
      .timeout_ms = c->timeout_ms,
      .cb = on_reply,
      .method = c->method,
      .body = c->body,
      .body_len = c->body_len,
      .max_body = MAX_REPLY,
  };
  c->attempts++;
  c->http.data = c;
  int rc = stg_http_request(c->loop, &c->http, &o);
  if (rc != 0) {
    /* Checked before: only out of memory. Try again later. */
    stg_warn("%s: %s", c->what, uv_strerror(rc));
    c->in_http = false; /* the caller arms the retry timer */
    return;
  }
  c->in_http = true;
}

static void on_retry(uv_timer_t *t) {
  stg__wfr_call_t *c = container_of(t, stg__wfr_call_t, retry);
  if (c->cancelled) {
    finish(c, UV_ECANCELED, 0, NULL);
    return;
  }
  attempt(c);
  if (!c->in_http)
    uv_timer_start(&c->retry, on_retry, RETRY_MAX_MS, 0);
}

static void on_reply(stg_http_request_t *h, int err, int status, const char *body, size_t len) {
  stg__wfr_call_t *c = h->data;
  c->in_http = false;
  if (c->cancelled && err != 0) {
    finish(c, UV_ECANCELED, 0, NULL);
    return;
  }
  bool again = err != 0 || (c->retry_5xx && status >= 500 && status <= 599);
  if (again && !c->cancelled && (c->max_attempts == 0 || c->attempts < c->max_attempts)) {
    char reason[96];
    if (err != 0)
      snprintf(reason, sizeof reason, "%s", uv_strerror(err));
    else
      snprintf(reason, sizeof reason, "the server answered %d", status);
    bool loud = c->attempts == 1 || c->attempts % LOG_EVERY == 0;
    stg_log(loud ? STG_LOG_INFO : STG_LOG_DEBUG, "%s: %s; retrying in %llums (attempt %u)",
            c->what, reason, (unsigned long long)c->delay_ms, c->attempts);
    uv_timer_start(&c->retry, on_retry, c->delay_ms, 0);
    c->delay_ms = c->delay_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : c->delay_ms * 2;
    return;
  }
  if (c->attempts > 1 && err == 0)
    stg_info("%s: the server answered again", c->what);
  json_t *j = NULL;
  if (err == 0 && len > 0)
    j = json_loadb(body, len, 0, NULL);
  finish(c, err, err == 0 ? status : 0, j);
  json_decref(j);
}

void stg__wfr_call_init(uv_loop_t *loop, stg__wfr_call_t *c, const char *server) {
  void *data = c->data;
  memset(c, 0, sizeof *c);
  c->data = data;
  c->loop = loop;
  c->server = server;
  uv_timer_init(loop, &c->retry);
}

int stg__wfr_call_start(stg__wfr_call_t *c, const stg__wfr_call_options_t *o,
                        stg__wfr_call_cb cb) {
  if (c->busy || c->closed || cb == NULL || o->path == NULL || o->method == NULL)
    return UV_EINVAL;
  char *path = strdup(o->path);
  char *method = strdup(o->method);
  char *body = NULL;
  if (o->body) {
    body = json_dumps(o->body, JSON_COMPACT);
    if (body == NULL) {
      free(path);
      free(method);
      return UV_ENOMEM;
    }
  }
  if (path == NULL || method == NULL) {
    free(path);
    free(method);
    free(body);
    return UV_ENOMEM;
  }
  free(c->path);
  free(c->method);
  free(c->body);
  c->path = path;
  c->method = method;
  c->body = body;
  c->body_len = body ? strlen(body) : 0;
  snprintf(c->what, sizeof c->what, "%s", o->what ? o->what : o->path);
  c->timeout_ms = o->timeout_ms ? o->timeout_ms : 10000;
  c->max_attempts = o->max_attempts;
  c->retry_5xx = o->retry_5xx;
  c->delay_ms = RETRY_INITIAL_MS;
  c->attempts = 0;
  c->cancelled = false;
  c->cb = cb;
  c->busy = true;
  attempt(c);
  if (!c->in_http)
    uv_timer_start(&c->retry, on_retry, RETRY_MAX_MS, 0);
  return 0;
}

void stg__wfr_call_cancel(stg__wfr_call_t *c) {
  if (!c->busy || c->cancelled)
    return;
  c->cancelled = true;
  if (c->in_http)
    stg_http_request_cancel(&c->http); /* on_reply reports it */
  else
    uv_timer_start(&c->retry, on_retry, 0, 0);
}

static void on_timer_closed(uv_handle_t *h) {
  stg__wfr_call_t *c = container_of((uv_timer_t *)h, stg__wfr_call_t, retry);
  free(c->path);
  free(c->method);
  free(c->body);
  c->path = c->method = c->body = NULL;
  if (c->close_cb)
    c->close_cb(c);
}

void stg__wfr_call_close(stg__wfr_call_t *c, void (*close_cb)(stg__wfr_call_t *c)) {
  c->closed = true;
  c->close_cb = close_cb;
  uv_close((uv_handle_t *)&c->retry, on_timer_closed);
}

/* --- UTF-8 -------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0; a NUL
 * is not kept either (JSON strings from jansson end there). */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  return s[0] == 0 ? 0 : stg_utf8_seq(s, n);
}

char *stg__wfr_utf8(const char *s, size_t len, size_t *out_len) {
  /* At worst every byte becomes three. */
  char *out = malloc(len * 3 + 1);
  if (out == NULL)
    return NULL;
  const unsigned char *p = (const unsigned char *)s;
  size_t o = 0;
  for (size_t i = 0; i < len;) {
    size_t n = utf8_seq(p + i, len - i);
    if (n == 0) {
      memcpy(out + o, "\xEF\xBF\xBD", 3);
      o += 3;
      i++;
    } else {
      memcpy(out + o, p + i, n);
      o += n;
      i += n;
    }
  }
  out[o] = '\0';
  if (out_len)
    *out_len = o;
  return out;
}
