#include "http.h"
#include "http-internal.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

enum {
  DEFAULT_MAX_BODY = 1024 * 1024,
  DEFAULT_MAX_HEADER_BYTES = 16 * 1024,
  DEFAULT_IDLE_TIMEOUT_MS = 30000,
  DEFAULT_MAX_CONNECTIONS = 1024,
  MAX_HEADERS = 128,           /* more: 431 */
  READ_BUF = 64 * 1024,        /* one buffer per server: reads are consumed at once */
  STASH_CAP = 64 * 1024,       /* pipelined bytes held while a request is answered */
  EXTRA_HEADERS_CAP = 4096,    /* stg_http_req_add_header */
  LINGER_MS = 2000,            /* after a closing response: drain input this long */
  BACKLOG = 511
};

/* --- addresses ------------------------------------------------------------------ */

int stg_http_parse_addr(const char *addr, struct sockaddr_storage *out) {
  if (addr == NULL)
    return UV_EINVAL;
  const char *colon = strrchr(addr, ':');
  if (colon == NULL || colon == addr || colon[1] == '\0')
    return UV_EINVAL;
  char *end;
  unsigned long port = strtoul(colon + 1, &end, 10);
  if (*end != '\0' || port > 65535 || colon[1] < '0' || colon[1] > '9')
    return UV_EINVAL;
  char host[128];
  size_t hl = (size_t)(colon - addr);
  if (hl >= sizeof host)
    return UV_EINVAL;
  memcpy(host, addr, hl);
  host[hl] = '\0';
  memset(out, 0, sizeof *out);
  if (host[0] == '[') {
    if (hl < 3 || host[hl - 1] != ']')
      return UV_EINVAL;
    host[hl - 1] = '\0';
    return uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)out) == 0 ? 0 : UV_EINVAL;
  }
  if (strcmp(host, "localhost") == 0)
    snprintf(host, sizeof host, "127.0.0.1");
  return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0 ? 0 : UV_EINVAL;
}

char *stg_http_format_addr(const struct sockaddr *sa, char *buf, size_t len) {
  char ip[64] = "?";
  int port = 0;
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)sa;
    uv_ip6_name(a6, ip, sizeof ip);
    port = ntohs(a6->sin6_port);
    snprintf(buf, len, "[%s]:%d", ip, port);
  } else {
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)sa;
    uv_ip4_name(a4, ip, sizeof ip);
    port = ntohs(a4->sin_port);
    snprintf(buf, len, "%s:%d", ip, port);
  }
  return buf;
}

/* --- server: private types -------------------------------------------------------- */

struct stg_http_req_s {
  stg_http_conn_t *conn;
  char *hbuf;               /* url\0 name\0 value\0 ... */
  size_t hlen, hcap;
  size_t mark;              /* start of the element being received */
  uint64_t header_bytes;    /* counted against max_header_bytes */
  struct {
    size_t name, value;     /* offsets into hbuf */
  } hdr[MAX_HEADERS];
  unsigned n_hdr;
  const char *method;
  const char *path;         /* into hbuf */
  const char *query;
  char *body;
  size_t body_len, body_cap;
  bool keep_alive;
  bool dispatched;          /* handed to a handler */
  bool answered;
  bool gone;
  stg_http_gone_fn gone_cb;
  void *gone_data;
  size_t extra_len;
  char extra[EXTRA_HEADERS_CAP];
};

typedef enum {
  C_READING,    /* waiting for or receiving a request */
  C_DISPATCHED, /* a handler has the request */
  C_WRITING,    /* the response is being written */
  C_LINGER,     /* closing response sent: draining input until EOF */
  C_CLOSING
} conn_state_t;

struct stg_http_conn_s {
  stg_http_server_t *srv;
  stg_http_conn_t *next, *prev;
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t write;
  uv_shutdown_t shutdown;
  llhttp_t parser;
  stg_http_req_t req;
  conn_state_t state;
  unsigned open_handles;
  bool counted;             /* counted in srv->n_conns */
  bool in_message;          /* a request has begun and is not complete */
  bool close_after;         /* close once the response is written */
  bool read_stopped;
  int error_status;         /* set by a parser callback that refuses */
  char *out;                /* the response being written */
  char *stash;              /* bytes read but not parsed yet */
  size_t stash_len, stash_cap;
};

static const llhttp_settings_t *server_settings(void);
static void conn_close(stg_http_conn_t *c);
static void conn_feed(stg_http_conn_t *c, const char *data, size_t len);
static int conn_write(stg_http_conn_t *c, int status, const char *ctype, const char *body,
                      size_t len, const char *extra, size_t extra_len, bool head);

/* --- small helpers ------------------------------------------------------------------ */

static const char *reason_phrase(int status) {
  switch (status) {
  case 100: return "Continue";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 304: return "Not Modified";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 413: return "Content Too Large";
  case 422: return "Unprocessable Content";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  }
  return status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Client Error"
                                                                       : "Server Error";
}

/* Appends to a buffer that grows up to cap. Returns 0 or UV_ENOBUFS. */
static int buf_append(char **buf, size_t *len, size_t *cap, size_t limit, const char *p,
                      size_t n) {
  if (n > limit || *len > limit - n)
    return UV_ENOBUFS;
  if (*len + n + 1 > *cap) {
    size_t nc = *cap ? *cap : 256;
    while (nc < *len + n + 1)
      nc *= 2;
    if (nc > limit + 1)
      nc = limit + 1;
    char *nb = realloc(*buf, nc);
    if (nb == NULL)
      return UV_ENOMEM;
    *buf = nb;
    *cap = nc;
  }
  memcpy(*buf + *len, p, n);
  *len += n;
  (*buf)[*len] = '\0';
  return 0;
}

static char *error_json(const char *code, const char *message) {
  json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  return s;
}

/* --- server: requests ----------------------------------------------------------------- */

static void req_reset(stg_http_req_t *r) {
  r->hlen = 0;
  r->mark = 0;
  r->header_bytes = 0;
  r->n_hdr = 0;
  r->method = "";
  r->path = "";
  r->query = "";
  r->body_len = 0;
  if (r->body)
    r->body[0] = '\0';
  r->keep_alive = false;
  r->dispatched = false;
  r->answered = false;
  r->gone = false;
  r->gone_cb = NULL;
  r->gone_data = NULL;
  r->extra_len = 0;
}

const char *stg_http_req_method(const stg_http_req_t *req) { return req->method; }
const char *stg_http_req_path(const stg_http_req_t *req) { return req->path; }
const char *stg_http_req_query(const stg_http_req_t *req) { return req->query; }
stg_http_server_t *stg_http_req_server(const stg_http_req_t *req) { return req->conn->srv; }
bool stg_http_req_gone(const stg_http_req_t *req) { return req->gone; }

const char *stg_http_req_header(const stg_http_req_t *req, const char *name) {
  for (unsigned i = 0; i < req->n_hdr; i++)
    if (strcasecmp(req->hbuf + req->hdr[i].name, name) == 0)
      return req->hbuf + req->hdr[i].value;
  return NULL;
}

const char *stg_http_req_body(const stg_http_req_t *req, size_t *len) {
  if (len)
    *len = req->body_len;
  return req->body ? req->body : "";
}

json_t *stg_http_req_json(const stg_http_req_t *req, json_error_t *err) {
  size_t len;
  const char *b = stg_http_req_body(req, &len);
  return json_loadb(b, len, 0, err);
}

void stg_http_req_on_gone(stg_http_req_t *req, stg_http_gone_fn cb, void *data) {
  req->gone_cb = cb;
  req->gone_data = data;
}

int stg_http_req_add_header(stg_http_req_t *req, const char *name, const char *value) {
  if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n"))
    return UV_EINVAL;
  int n = snprintf(req->extra + req->extra_len, sizeof req->extra - req->extra_len,
                   "%s: %s\r\n", name, value);
  if (n < 0 || (size_t)n >= sizeof req->extra - req->extra_len) {
    req->extra[req->extra_len] = '\0';
    return UV_ENOBUFS;
  }
  req->extra_len += (size_t)n;
  return 0;
}

static void conn_maybe_free(stg_http_conn_t *c);

int stg_http_respond(stg_http_req_t *req, int status, const char *content_type,
                     const char *body, size_t len) {
  stg_http_conn_t *c = req->conn;
  assert(req->dispatched && !req->answered);
  req->answered = true;
  if (req->gone || c->state != C_DISPATCHED) {
    conn_maybe_free(c);
    return UV_ECONNRESET;
  }
  bool head = strcmp(req->method, "HEAD") == 0;
  c->close_after = !req->keep_alive || c->srv->shutting_down;
  return conn_write(c, status, content_type, body, len, req->extra, req->extra_len, head);
}

int stg_http_respond_json(stg_http_req_t *req, int status, const json_t *body) {
  char *s = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
  if (s == NULL)
    return stg_http_respond_error(req, 500, "internal", "cannot encode the response");
  size_t n = strlen(s);
  s[n] = '\0';
  int rc = stg_http_respond(req, status, "application/json", s, n);
  free(s);
  return rc;
}

int stg_http_respond_error(stg_http_req_t *req, int status, const char *code,
                           const char *message) {
  char *s = error_json(code, message);
  int rc = stg_http_respond(req, status, "application/json", s ? s : "{}", s ? strlen(s) : 2);
  free(s);
  return rc;
}

/* --- server: connections ----------------------------------------------------------------- */

static void server_maybe_finish(stg_http_server_t *srv) {
  if (!srv->shutting_down || srv->tcp_open || srv->conns != NULL || srv->closed_called)
    return;
  srv->closed_called = true;
  free(srv->rbuf); /* connections read into it until the last one closed */
  srv->rbuf = NULL;
  if (srv->closed_cb)
    srv->closed_cb(srv);
}

static void conn_maybe_free(stg_http_conn_t *c) {
  if (c->open_handles > 0 || (c->req.dispatched && !c->req.answered))
    return;
  stg_http_server_t *srv = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    srv->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  if (c->counted && --srv->n_conns < srv->opts.max_connections)
    srv->overload_logged = false;
  free(c->req.hbuf);
  free(c->req.body);
  free(c->stash);
  free(c->out);
  free(c);
  server_maybe_finish(srv);
}

static void on_conn_handle_closed(uv_handle_t *h) {
  stg_http_conn_t *c = h->data;
  c->open_handles--;
  conn_maybe_free(c);
}

static void conn_close(stg_http_conn_t *c) {
  if (c->state == C_CLOSING)
    return;
  c->state = C_CLOSING;
  uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
  stg_http_req_t *r = &c->req;
  if (r->dispatched && !r->answered && !r->gone) {
    r->gone = true;
    if (r->gone_cb)
      r->gone_cb(r, r->gone_data);
  }
}

static void on_conn_timer(uv_timer_t *t) {
  stg_http_conn_t *c = container_of(t, stg_http_conn_t, timer);
  if (c->state == C_READING && c->in_message)
    stg_debug("http: closing a connection: no complete request within the idle timeout");
  conn_close(c);
}

static void arm_idle(stg_http_conn_t *c, uint64_t ms) {
  uv_timer_start(&c->timer, on_conn_timer, ms, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  stg_http_conn_t *c = h->data;
  buf->base = c->srv->rbuf;
  buf->len = READ_BUF;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_shutdown(uv_shutdown_t *s, int status) {
  stg_http_conn_t *c = container_of(s, stg_http_conn_t, shutdown);
  if (status < 0)
    conn_close(c);
}

/* The closing response is out: stop sending, drain what the client still
 * sends (so the kernel does not reset the connection before the client
 * read the response), close at EOF or after a bound. */
static void conn_linger(stg_http_conn_t *c) {
  c->state = C_LINGER;
  uint64_t ms = c->srv->opts.idle_timeout_ms < LINGER_MS ? c->srv->opts.idle_timeout_ms
                                                          : LINGER_MS;
  arm_idle(c, ms);
  if (c->read_stopped) {
    c->read_stopped = false;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
      conn_close(c);
      return;
    }
  }
  if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
    conn_close(c);
}

static void conn_resume_reading(stg_http_conn_t *c) {
  c->state = C_READING;
  c->in_message = false;
  req_reset(&c->req);
  llhttp_resume(&c->parser);
  arm_idle(c, c->srv->opts.idle_timeout_ms);
  if (c->read_stopped) {
    c->read_stopped = false;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
      conn_close(c);
      return;
    }
  }
  if (c->stash_len > 0) {
    /* Pipelined bytes: parse them now; what is left is stashed again. */
    char *data = c->stash;
    size_t len = c->stash_len;
    c->stash = NULL;
    c->stash_len = c->stash_cap = 0;
    conn_feed(c, data, len);
    free(data);
  }
}

static void on_write(uv_write_t *w, int status) {
  stg_http_conn_t *c = container_of(w, stg_http_conn_t, write);
  free(c->out);
  c->out = NULL;
  if (c->state == C_CLOSING)
    return;
  if (status < 0) {
    conn_close(c);
    return;
  }
  if (c->close_after) {
    conn_linger(c);
    return;
  }
  if (c->srv->shutting_down) {
    conn_close(c);
    return;
  }
  conn_resume_reading(c);
}

static int conn_write(stg_http_conn_t *c, int status, const char *ctype, const char *body,
                      size_t len, const char *extra, size_t extra_len, bool head) {
  char hdr[512];
  char ct[256] = "";
  if (ctype && *ctype)
    snprintf(ct, sizeof ct, "Content-Type: %s\r\n", ctype);
  bool no_body = head || status == 204 || status == 304 || (status >= 100 && status < 200);
  int n = snprintf(hdr, sizeof hdr, "HTTP/1.1 %d %s\r\n%sContent-Length: %zu\r\n"
                   "Connection: %s\r\n", status, reason_phrase(status), ct,
                   status == 204 || status == 304 ? (size_t)0 : len,
                   c->close_after ? "close" : "keep-alive");
  size_t blen = no_body ? 0 : len;
  size_t total = (size_t)n + extra_len + 2 + blen;
  char *out = malloc(total);
  if (out == NULL) {
    conn_close(c);
    return UV_ENOMEM;
  }
  memcpy(out, hdr, (size_t)n);
  if (extra_len)
    memcpy(out + n, extra, extra_len);
  memcpy(out + n + extra_len, "\r\n", 2);
  if (blen)
    memcpy(out + n + extra_len + 2, body, blen);
  c->out = out;
  c->state = C_WRITING;
  arm_idle(c, c->srv->opts.idle_timeout_ms); /* a client that does not read */
  uv_buf_t b = uv_buf_init(out, (unsigned)total);
  int rc = uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_write);
  if (rc != 0) {
    free(c->out);
    c->out = NULL;
    conn_close(c);
  }
  return rc;
}

/* A response the server makes itself (errors); the connection closes after. */
static void conn_fail(stg_http_conn_t *c, int status, const char *code, const char *message,
                      const char *extra) {
  char *s = error_json(code, message);
  c->close_after = true;
  conn_write(c, status, "application/json", s ? s : "{}", s ? strlen(s) : 2, extra,
             extra ? strlen(extra) : 0, false);
  free(s);
}

static bool route_matches_path(const stg_http_route_t *r, const char *path) {
  size_t n = strlen(r->path);
  if (n >= 2 && r->path[n - 1] == '*' && r->path[n - 2] == '/')
    return strncmp(path, r->path, n - 1) == 0;
  return strcmp(path, r->path) == 0;
}

static void conn_dispatch(stg_http_conn_t *c) {
  stg_http_req_t *r = &c->req;
  stg_http_server_t *srv = c->srv;
  uv_timer_stop(&c->timer);
  c->in_message = false;
  c->state = C_DISPATCHED;
  r->dispatched = true;
  /* Split the target into path and query, in place. */
  char *url = r->hbuf;
  char *q = strchr(url, '?');
  if (q) {
    *q = '\0';
    r->query = q + 1;
  } else {
    r->query = "";
  }
  char *hash = strchr(q ? q + 1 : url, '#');
  if (hash)
    *hash = '\0';
  r->path = url;
  if (url[0] != '/') {
    c->req.keep_alive = false;
    stg_http_respond_error(r, 400, "bad_request", "the request target must be an absolute path");
    return;
  }
  char allow[256] = "";
  size_t alen = 0;
  for (unsigned i = 0; i < srv->opts.n_routes; i++) {
    const stg_http_route_t *rt = &srv->opts.routes[i];
    if (!route_matches_path(rt, r->path))
      continue;
    if (strcmp(rt->method, r->method) == 0) {
      rt->handler(r, rt->data);
      return;
    }
    if (strstr(allow, rt->method) == NULL) {
      int n = snprintf(allow + alen, sizeof allow - alen, "%s%s", alen ? ", " : "", rt->method);
      if (n > 0 && (size_t)n < sizeof allow - alen)
        alen += (size_t)n;
    }
  }
  char msg[512];
  if (alen > 0) {
    stg_http_req_add_header(r, "Allow", allow);
    snprintf(msg, sizeof msg, "%s %s: method not allowed (allowed: %s)", r->method, r->path,
             allow);
    stg_http_respond_error(r, 405, "method_not_allowed", msg);
    return;
  }
  snprintf(msg, sizeof msg, "%s %s: no such resource", r->method, r->path);
  stg_http_respond_error(r, 404, "not_found", msg);
}

static void conn_stash(stg_http_conn_t *c, const char *data, size_t len) {
  if (len == 0)
    return;
  /* STASH_CAP is enforced by stopping reads; this append may exceed it by
   * one read buffer, which is the hard bound. */
  if (buf_append(&c->stash, &c->stash_len, &c->stash_cap, STASH_CAP + READ_BUF, data, len) != 0) {
    conn_close(c);
    return;
  }
  if (c->stash_len >= STASH_CAP && !c->read_stopped) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->read_stopped = true;
  }
}

static void conn_feed(stg_http_conn_t *c, const char *data, size_t len) {
  llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
  if (e == HPE_OK)
    return;
  if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
    const char *pos = llhttp_get_error_pos(&c->parser);
    size_t used = pos ? (size_t)(pos - data) : len;
    if (e == HPE_PAUSED_UPGRADE)
      c->req.keep_alive = false;
    if (used < len)
      conn_stash(c, data + used, len - used);
    if (c->state == C_CLOSING)
      return;
    conn_dispatch(c);
    return;
  }
  if (c->error_status < 0) {
    conn_close(c);
    return;
  }
  int status = c->error_status ? c->error_status : 400;
  char msg[256];
  switch (status) {
  case 413:
    snprintf(msg, sizeof msg, "the request body is larger than %llu bytes",
             (unsigned long long)c->srv->opts.max_body);
    conn_fail(c, 413, "body_too_large", msg, NULL);
    break;
  case 431:
    snprintf(msg, sizeof msg, "the request line and headers are larger than %llu bytes "
             "or more than %d headers", (unsigned long long)c->srv->opts.max_header_bytes,
             MAX_HEADERS);
    conn_fail(c, 431, "headers_too_large", msg, NULL);
    break;
  case 500:
    conn_fail(c, 500, "internal", "out of memory", NULL);
    break;
  default:
    snprintf(msg, sizeof msg, "malformed request: %s", llhttp_get_error_reason(&c->parser));
    conn_fail(c, 400, "bad_request", msg, NULL);
    break;
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  stg_http_conn_t *c = s->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    /* EOF or an error: the client is gone (a half-closed client counts as
     * gone: nothing could answer it a second request). */
    conn_close(c);
    return;
  }
  switch (c->state) {
  case C_READING:
    arm_idle(c, c->srv->opts.idle_timeout_ms);
    conn_feed(c, buf->base, (size_t)nread);
    break;
  case C_DISPATCHED:
  case C_WRITING:
    conn_stash(c, buf->base, (size_t)nread);
    break;
  case C_LINGER:
  case C_CLOSING:
    break;
  }
}

/* --- server: parser callbacks ---------------------------------------------------------- */

static stg_http_conn_t *parser_conn(llhttp_t *p) { return container_of(p, stg_http_conn_t, parser); }

static int count_header_bytes(stg_http_conn_t *c, size_t n) {
  c->req.header_bytes += n;
  if (c->req.header_bytes > c->srv->opts.max_header_bytes) {
    c->error_status = 431;
    return -1;
  }
  return 0;
}

static int append_hbuf(stg_http_conn_t *c, const char *at, size_t n) {
  stg_http_req_t *r = &c->req;
  if (count_header_bytes(c, n) != 0)
    return -1;
  /* Each element gets a NUL; MAX_HEADERS * 2 + 1 of them at most. */
  size_t limit = c->srv->opts.max_header_bytes + 2 * MAX_HEADERS + 2;
  int rc = buf_append(&r->hbuf, &r->hlen, &r->hcap, limit, at, n);
  if (rc != 0) {
    c->error_status = rc == UV_ENOMEM ? 500 : 431;
    return -1;
  }
  return 0;
}

static int end_element(stg_http_conn_t *c, size_t *offset) {
  stg_http_req_t *r = &c->req;
  *offset = r->mark;
  size_t limit = c->srv->opts.max_header_bytes + 2 * MAX_HEADERS + 2;
  int rc = buf_append(&r->hbuf, &r->hlen, &r->hcap, limit, "", 1);
  if (rc != 0) {
    c->error_status = rc == UV_ENOMEM ? 500 : 431;
    return -1;
  }
  r->mark = r->hlen;
  return 0;
}

static int on_message_begin(llhttp_t *p) {
  stg_http_conn_t *c = parser_conn(p);
  req_reset(&c->req);
  c->in_message = true;
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n) { return append_hbuf(parser_conn(p), at, n); }

static int on_url_complete(llhttp_t *p) {
  size_t off;
  return end_element(parser_conn(p), &off);
}

static int on_header_field(llhttp_t *p, const char *at, size_t n) {
  return append_hbuf(parser_conn(p), at, n);
}

static int on_header_field_complete(llhttp_t *p) {
  stg_http_conn_t *c = parser_conn(p);
  if (c->req.n_hdr >= MAX_HEADERS) {
    c->error_status = 431;
    return -1;
  }
  return end_element(c, &c->req.hdr[c->req.n_hdr].name);
}

static int on_header_value(llhttp_t *p, const char *at, size_t n) {
  return append_hbuf(parser_conn(p), at, n);
}

static int on_header_value_complete(llhttp_t *p) {
  stg_http_conn_t *c = parser_conn(p);
  if (end_element(c, &c->req.hdr[c->req.n_hdr].value) != 0)
    return -1;
  c->req.n_hdr++;
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  stg_http_conn_t *c = parser_conn(p);
  stg_http_req_t *r = &c->req;
  if (r->hlen == 0 || r->hbuf == NULL) { /* no target at all */
    c->error_status = 400;
    return -1;
  }
  r->method = llhttp_method_name((llhttp_method_t)llhttp_get_method(p));
  r->keep_alive = llhttp_should_keep_alive(p) && !llhttp_get_upgrade(p);
  if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->srv->opts.max_body) {
    c->error_status = 413;
    return -1;
  }
  const char *expect = stg_http_req_header(r, "Expect");
  if (expect && strcasecmp(expect, "100-continue") == 0 && p->http_minor >= 1) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)cont, sizeof cont - 1);
    /* Best effort: a client that gets no 100 sends the body after a delay
     * anyway. Half of it sent would garble the stream: then close. */
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n > 0 && (size_t)n < sizeof cont - 1) {
      c->error_status = -1;
      return -1;
    }
  }
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n) {
  stg_http_conn_t *c = parser_conn(p);
  stg_http_req_t *r = &c->req;
  int rc = buf_append(&r->body, &r->body_len, &r->body_cap, c->srv->opts.max_body, at, n);
  if (rc != 0) {
    c->error_status = rc == UV_ENOMEM ? 500 : 413;
    return -1;
  }
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  (void)p;
  return HPE_PAUSED; /* one request at a time: dispatch, then resume */
}

static const llhttp_settings_t *server_settings(void) {
  static llhttp_settings_t s;
  static bool init;
  if (!init) {
    llhttp_settings_init(&s);
    s.on_message_begin = on_message_begin;
    s.on_url = on_url;
    s.on_url_complete = on_url_complete;
    s.on_header_field = on_header_field;
    s.on_header_field_complete = on_header_field_complete;
    s.on_header_value = on_header_value;
    s.on_header_value_complete = on_header_value_complete;
    s.on_headers_complete = on_headers_complete;
    s.on_body = on_body;
    s.on_message_complete = on_message_complete;
    init = true;
  }
  return &s;
}

/* --- server: listener ------------------------------------------------------------------ */

/* Starts a connection accepted from ls, or (ls NULL) adopting fd. */
static int conn_begin(stg_http_server_t *srv, uv_stream_t *ls, uv_os_sock_t fd) {
  stg_http_conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    stg_warn("http: accept: out of memory");
    return UV_ENOMEM;
  }
  c->srv = srv;
  c->req.conn = c;
  req_reset(&c->req);
  uv_tcp_init(srv->loop, &c->tcp);
  uv_timer_init(srv->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->open_handles = 2;
  c->next = srv->conns;
  if (srv->conns)
    srv->conns->prev = c;
  srv->conns = c;
  llhttp_init(&c->parser, HTTP_REQUEST, server_settings());
  int rc = ls ? uv_accept(ls, (uv_stream_t *)&c->tcp) : uv_tcp_open(&c->tcp, fd);
  if (rc != 0) {
    if (ls == NULL)
      close(fd); /* not attached to the handle */
    stg_warn("http: accept: %s", uv_strerror(rc));
    conn_close(c);
    return rc;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (rc != 0) {
    conn_close(c);
    return rc;
  }
  if (srv->n_conns >= srv->opts.max_connections) {
    char msg[128];
    snprintf(msg, sizeof msg, "more than %u connections; try again later",
             srv->opts.max_connections);
    if (!srv->overload_logged) /* once per overload, not per connection */
      stg_warn("http: refusing connections: %s", msg);
    srv->overload_logged = true;
    conn_fail(c, 503, "too_many_connections", msg, "Retry-After: 1\r\n");
    return 0;
  }
  c->counted = true;
  srv->n_conns++;
  c->state = C_READING;
  arm_idle(c, srv->opts.idle_timeout_ms);
  return 0;
}

static void on_connection(uv_stream_t *ls, int status) {
  stg_http_server_t *srv = container_of(ls, stg_http_server_t, tcp);
  if (status < 0) {
    stg_warn("http: accept: %s", uv_strerror(status));
    return;
  }
  conn_begin(srv, ls, -1);
}

int stg__http_server_adopt(stg_http_server_t *srv, uv_os_sock_t fd) {
  if (srv->shutting_down)
    return UV_ECANCELED;
  return conn_begin(srv, NULL, fd);
}

int stg_http_server_init(uv_loop_t *loop, stg_http_server_t *srv,
                         const stg_http_options_t *opts) {
  memset(srv, 0, sizeof *srv);
  srv->loop = loop;
  srv->opts = *opts;
  if (srv->opts.max_body == 0)
    srv->opts.max_body = DEFAULT_MAX_BODY;
  if (srv->opts.max_header_bytes == 0)
    srv->opts.max_header_bytes = DEFAULT_MAX_HEADER_BYTES;
  if (srv->opts.idle_timeout_ms == 0)
    srv->opts.idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
  if (srv->opts.max_connections == 0)
    srv->opts.max_connections = DEFAULT_MAX_CONNECTIONS;
  srv->rbuf = malloc(READ_BUF);
  if (srv->rbuf == NULL)
    return UV_ENOMEM;
  int rc = uv_tcp_init(loop, &srv->tcp);
  if (rc != 0) {
    free(srv->rbuf);
    srv->rbuf = NULL;
    return rc;
  }
  srv->tcp_open = true;
  return 0;
}

int stg_http_server_listen(stg_http_server_t *srv, const char *addr) {
  struct sockaddr_storage ss;
  int rc = stg_http_parse_addr(addr, &ss);
  if (rc != 0)
    return rc;
  if (srv->shutting_down || srv->listening)
    return UV_EINVAL;
  rc = uv_tcp_bind(&srv->tcp, (struct sockaddr *)&ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&srv->tcp, BACKLOG, on_connection);
  if (rc == 0)
    srv->listening = true;
  return rc;
}

int stg_http_server_address(stg_http_server_t *srv, char *buf, size_t len) {
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  int rc = uv_tcp_getsockname(&srv->tcp, (struct sockaddr *)&ss, &sl);
  if (rc != 0)
    return rc;
  stg_http_format_addr((struct sockaddr *)&ss, buf, len);
  return 0;
}

static void on_listener_closed(uv_handle_t *h) {
  stg_http_server_t *srv = container_of(h, stg_http_server_t, tcp);
  srv->tcp_open = false;
  server_maybe_finish(srv);
}

void stg_http_server_shutdown(stg_http_server_t *srv, stg_http_closed_fn cb) {
  if (cb)
    srv->closed_cb = cb;
  if (srv->shutting_down)
    return;
  srv->shutting_down = true;
  srv->listening = false;
  if (srv->tcp_open && !uv_is_closing((uv_handle_t *)&srv->tcp))
    uv_close((uv_handle_t *)&srv->tcp, on_listener_closed);
  stg_http_conn_t *next;
  for (stg_http_conn_t *c = srv->conns; c; c = next) {
    next = c->next;
    if (c->state == C_READING && !c->in_message && c->stash_len == 0)
      conn_close(c); /* idle keep-alive */
  }
  server_maybe_finish(srv);
}

void stg_http_server_abort(stg_http_server_t *srv) {
  stg_http_server_shutdown(srv, NULL);
  stg_http_conn_t *next;
  for (stg_http_conn_t *c = srv->conns; c; c = next) {
    next = c->next;
    conn_close(c);
  }
}

/* --- client ------------------------------------------------------------------------------ */

static void get_handle_closed(uv_handle_t *h) {
  stg_http_get_t *g = h->data;
  if (--g->open_handles > 0)
    return;
  free(g->request);
  g->request = NULL;
  char *body = g->body;
  g->body = NULL;
  g->cb(g, g->err, g->err ? 0 : g->status, body ? body : "", body ? g->body_len : 0);
  free(body);
}

static void get_finish(stg_http_get_t *g, int err) {
  if (g->done)
    return;
  g->done = true;
  g->err = err;
  uv_close((uv_handle_t *)&g->tcp, get_handle_closed);
  uv_close((uv_handle_t *)&g->timer, get_handle_closed);
}

static int get_on_headers_complete(llhttp_t *p) {
  stg_http_get_t *g = container_of(p, stg_http_get_t, parser);
  g->status = llhttp_get_status_code(p);
  return 0;
}

static int get_on_body(llhttp_t *p, const char *at, size_t n) {
  stg_http_get_t *g = container_of(p, stg_http_get_t, parser);
  if (g->body_len + n > g->max_body) {
    g->err = UV_E2BIG;
    return HPE_USER;
  }
  if (g->body_len + n + 1 > g->body_cap) {
    size_t cap = g->body_cap ? g->body_cap : 1024;
    while (cap < g->body_len + n + 1)
      cap *= 2;
    char *nb = realloc(g->body, cap);
    if (nb == NULL) {
      g->err = UV_ENOMEM;
      return HPE_USER;
    }
    g->body = nb;
    g->body_cap = cap;
  }
  memcpy(g->body + g->body_len, at, n);
  g->body_len += n;
  g->body[g->body_len] = '\0';
  return 0;
}

static int get_on_message_complete(llhttp_t *p) {
  stg_http_get_t *g = container_of(p, stg_http_get_t, parser);
  g->complete = true;
  return HPE_PAUSED;
}

static void get_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char rbuf[8192]; /* consumed before the next read */
  buf->base = rbuf;
  buf->len = sizeof rbuf;
}

static void get_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  stg_http_get_t *g = s->data;
  if (nread == 0 || g->done)
    return;
  if (nread == UV_EOF) {
    llhttp_errno_t e = llhttp_finish(&g->parser);
    get_finish(g, g->complete ? 0 : e == HPE_OK || e == HPE_PAUSED ? UV_EOF : UV_EPROTO);
    return;
  }
  if (nread < 0) {
    get_finish(g, (int)nread);
    return;
  }
  llhttp_errno_t e = llhttp_execute(&g->parser, buf->base, (size_t)nread);
  if (g->complete)
    get_finish(g, 0);
  else if (e == HPE_USER)
    get_finish(g, g->err ? g->err : UV_EPROTO);
  else if (e != HPE_OK)
    get_finish(g, UV_EPROTO);
}

static void get_on_write(uv_write_t *w, int status) {
  stg_http_get_t *g = container_of(w, stg_http_get_t, write);
  if (status < 0)
    get_finish(g, status);
}

static void get_on_connect(uv_connect_t *req, int status) {
  stg_http_get_t *g = container_of(req, stg_http_get_t, connect);
  if (g->done)
    return;
  if (status < 0) {
    get_finish(g, status);
    return;
  }
  uv_buf_t b = uv_buf_init(g->request, (unsigned)g->request_len);
  int rc = uv_write(&g->write, (uv_stream_t *)&g->tcp, &b, 1, get_on_write);
  if (rc == 0)
    rc = uv_read_start((uv_stream_t *)&g->tcp, get_alloc, get_on_read);
  if (rc != 0)
    get_finish(g, rc);
}

static void get_on_timeout(uv_timer_t *t) {
  stg_http_get_t *g = container_of(t, stg_http_get_t, timer);
  get_finish(g, UV_ETIMEDOUT);
}

int stg_http_get(uv_loop_t *loop, stg_http_get_t *g, const stg_http_get_options_t *opts) {
  struct sockaddr_storage ss;
  void *data = g->data;
  memset(g, 0, sizeof *g);
  g->data = data;
  if (opts->cb == NULL || opts->path == NULL || opts->path[0] != '/' ||
      strpbrk(opts->path, " \r\n\t") != NULL)
    return UV_EINVAL;
  int rc = stg_http_parse_addr(opts->addr, &ss);
  if (rc != 0)
    return rc;
  const char *method = opts->method ? opts->method : "GET";
  if (strpbrk(method, " \r\n\t") != NULL || *method == '\0')
    return UV_EINVAL;
  const char *ctype = opts->content_type ? opts->content_type : "application/json";
  size_t blen = opts->body ? opts->body_len : 0;
  size_t n = strlen(opts->path) + strlen(opts->addr) + strlen(method) + strlen(ctype) + 192;
  g->request = malloc(n + blen);
  if (g->request == NULL)
    return UV_ENOMEM;
  int hl;
  if (opts->body)
    hl = snprintf(g->request, n, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: stigmer\r\n"
                  "Content-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                  method, opts->path, opts->addr, ctype, blen);
  else
    hl = snprintf(g->request, n, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: stigmer\r\n"
                  "Connection: close\r\n\r\n", method, opts->path, opts->addr);
  if (blen)
    memcpy(g->request + hl, opts->body, blen);
  g->request_len = (size_t)hl + blen;
  g->max_body = opts->max_body ? opts->max_body : STG_HTTP_GET_MAX_BODY;
  if (g->max_body > STG_HTTP_CLIENT_MAX_BODY)
    g->max_body = STG_HTTP_CLIENT_MAX_BODY;
  g->loop = loop;
  g->cb = opts->cb;
  llhttp_settings_init(&g->settings);
  g->settings.on_headers_complete = get_on_headers_complete;
  g->settings.on_body = get_on_body;
  g->settings.on_message_complete = get_on_message_complete;
  llhttp_init(&g->parser, HTTP_RESPONSE, &g->settings);
  uv_tcp_init(loop, &g->tcp);
  uv_timer_init(loop, &g->timer);
  g->tcp.data = g;
  g->timer.data = g;
  g->open_handles = 2;
  uv_timer_start(&g->timer, get_on_timeout, opts->timeout_ms ? opts->timeout_ms : 5000, 0);
  rc = uv_tcp_connect(&g->connect, &g->tcp, (struct sockaddr *)&ss, get_on_connect);
  if (rc != 0)
    get_finish(g, rc); /* reported through cb, as promised */
  return 0;
}

void stg_http_get_cancel(stg_http_get_t *g) { get_finish(g, UV_ECANCELED); }
