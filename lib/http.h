/* A small HTTP/1.1 server and health-check client on a caller's uv loop.
 * Parsing by llhttp. Contract: docs/internals/http.md.
 *
 * Server: keep-alive, one request at a time per connection (pipelined
 * requests wait their turn), a route table, limits on body and header size,
 * an idle timeout, a connection cap, graceful shutdown. A handler may answer
 * at once or keep the request and answer later (long polls); it learns that
 * the client went away through a "gone" callback.
 *
 * Client: one GET, status code and a capped body, with a timeout.
 */
#ifndef STG_HTTP_H
#define STG_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <llhttp.h>
#include <uv.h>

/* --- addresses ----------------------------------------------------------------- */

/* Parses "host:port": an IPv4 address, "[IPv6]", or "localhost" (which
 * means 127.0.0.1). No name lookup. Returns 0 or UV_EINVAL. */
int stg_http_parse_addr(const char *addr, struct sockaddr_storage *out);

/* Formats an address as "host:port" ("[::1]:80" for IPv6). Returns buf. */
char *stg_http_format_addr(const struct sockaddr *sa, char *buf, size_t len);

/* --- server -------------------------------------------------------------------- */

typedef struct stg_http_server_s stg_http_server_t;
typedef struct stg_http_conn_s stg_http_conn_t;
typedef struct stg_http_req_s stg_http_req_t;

/* Called once per complete request. The handler must answer it exactly once
 * with stg_http_respond*(), now or later; until then the request stays
 * valid and the connection reads no further request. */
typedef void (*stg_http_handler_fn)(stg_http_req_t *req, void *data);
/* The client of a request not yet answered went away (closed, reset, or
 * the server was aborted). The request must still be answered (the answer
 * is discarded), which frees it. */
typedef void (*stg_http_gone_fn)(stg_http_req_t *req, void *data);
/* All connections and the listener are closed; the server may be freed. */
typedef void (*stg_http_closed_fn)(stg_http_server_t *srv);

typedef struct {
  const char *method;         /* "GET", "POST", ... (exact, upper case) */
  const char *path;           /* "/healthz"; a path ending in "/" "*" matches
                                 every path under it */
  stg_http_handler_fn handler;
  void *data;                 /* passed to handler */
} stg_http_route_t;

typedef struct {
  uint64_t max_body;          /* request body cap in bytes (413); 0: 1 MiB */
  uint64_t max_header_bytes;  /* request line + headers cap (431); 0: 16 KiB */
  uint64_t idle_timeout_ms;   /* a connection waiting for (the rest of) a
                                 request this long is closed; 0: 30 s */
  unsigned max_connections;   /* more get 503 and are closed; 0: 1024 */
  const stg_http_route_t *routes; /* borrowed; must outlive the server */
  unsigned n_routes;
} stg_http_options_t;

struct stg_http_server_s {
  void *data;                 /* the caller's */
  /* private */
  uv_loop_t *loop;
  uv_tcp_t tcp;
  stg_http_options_t opts;
  char *rbuf;                 /* the read buffer all connections share */
  stg_http_conn_t *conns;     /* doubly linked list */
  unsigned n_conns;           /* counted against max_connections */
  bool listening;
  bool tcp_open;
  bool shutting_down;
  bool closed_called;
  bool overload_logged;       /* "refusing connections" said once */
  stg_http_closed_fn closed_cb;
};

/* Fills in the server and opens its (unbound) listener handle. Returns 0
 * or UV_ENOMEM. After a success, the server is shut down with
 * stg_http_server_shutdown() and freed only in its callback. */
int stg_http_server_init(uv_loop_t *loop, stg_http_server_t *srv,
                         const stg_http_options_t *opts);

/* Binds and listens on addr ("127.0.0.1:0" picks a free port). Returns 0,
 * UV_EINVAL for a malformed address, or the bind/listen error
 * (UV_EADDRINUSE, UV_EACCES, UV_EADDRNOTAVAIL...). Whatever it returns,
 * the server is still shut down with stg_http_server_shutdown(). */
int stg_http_server_listen(stg_http_server_t *srv, const char *addr);

/* The bound address as "host:port" into buf; returns 0 or an error. */
int stg_http_server_address(stg_http_server_t *srv, char *buf, size_t len);

/* Graceful shutdown: stop accepting, close idle connections, let requests
 * being received or answered finish (their responses say Connection:
 * close), then call cb once everything is closed. cb may be NULL. */
void stg_http_server_shutdown(stg_http_server_t *srv, stg_http_closed_fn cb);

/* After (or instead of) a graceful shutdown: close every connection now.
 * Requests still unanswered get their gone callback; cb of the shutdown
 * runs once they are answered and everything is closed. */
void stg_http_server_abort(stg_http_server_t *srv);

/* --- requests ------------------------------------------------------------------ */

const char *stg_http_req_method(const stg_http_req_t *req); /* "GET" */
const char *stg_http_req_path(const stg_http_req_t *req);   /* "/a/b", no query */
const char *stg_http_req_query(const stg_http_req_t *req);  /* after '?', or "" */
/* The first header of that name (case-insensitive), or NULL. */
const char *stg_http_req_header(const stg_http_req_t *req, const char *name);
/* The body (NUL-terminated after len bytes; may be empty, never NULL). */
const char *stg_http_req_body(const stg_http_req_t *req, size_t *len);
/* The body parsed as JSON (new reference), or NULL with err filled. */
json_t *stg_http_req_json(const stg_http_req_t *req, json_error_t *err);
/* The server the request arrived on. */
stg_http_server_t *stg_http_req_server(const stg_http_req_t *req);
/* True once the client has gone away. */
bool stg_http_req_gone(const stg_http_req_t *req);
/* Sets the gone callback (for requests answered later). */
void stg_http_req_on_gone(stg_http_req_t *req, stg_http_gone_fn cb, void *data);

/* Adds a response header (e.g. "Allow", "GET"). Returns 0, or UV_ENOBUFS
 * when the extra headers exceed 4 KiB. */
int stg_http_req_add_header(stg_http_req_t *req, const char *name, const char *value);

/* Answers the request: status, content type and body (copied). Returns 0,
 * or UV_ECONNRESET when the client is gone (the answer is discarded, the
 * request freed all the same). After the call req is no longer valid. */
int stg_http_respond(stg_http_req_t *req, int status, const char *content_type,
                     const char *body, size_t len);
/* The same with a JSON body (borrowed, not decref'd). */
int stg_http_respond_json(stg_http_req_t *req, int status, const json_t *body);
/* {"error":{"code":code,"message":message}} with that status. */
int stg_http_respond_error(stg_http_req_t *req, int status, const char *code,
                           const char *message);

/* --- client ---------------------------------------------------------------------- */

typedef struct stg_http_get_s stg_http_get_t;

/* Called exactly once. err is 0 when a whole response arrived, else a
 * negative error (UV_ECONNREFUSED, UV_ETIMEDOUT, UV_EPROTO for a malformed
 * response, UV_E2BIG for a body over max_body, UV_ECANCELED...). status is
 * the HTTP status (0 on error); body (NUL-terminated) is valid during the
 * call only. Runs after every handle is closed: g may be freed or reused in
 * it. */
typedef void (*stg_http_get_cb)(stg_http_get_t *g, int err, int status,
                                const char *body, size_t len);

typedef struct {
  const char *addr;           /* "host:port" as for stg_http_parse_addr */
  const char *path;           /* "/healthz", with any query; copied */
  uint64_t timeout_ms;        /* for the whole exchange; 0: 5 s */
  stg_http_get_cb cb;
  const char *method;         /* NULL: "GET" */
  const char *body;           /* request body (copied), or NULL */
  size_t body_len;            /* its length */
  const char *content_type;   /* of the body; NULL: application/json */
  size_t max_body;            /* response body cap; 0: 4 KiB, at most 64 MiB */
} stg_http_get_options_t;

/* The request options under their general name. */
typedef stg_http_get_options_t stg_http_request_options_t;
typedef stg_http_get_t stg_http_request_t;

#define STG_HTTP_GET_MAX_BODY 4096
#define STG_HTTP_CLIENT_MAX_BODY (64u << 20)

struct stg_http_get_s {
  void *data;                 /* the caller's */
  /* private */
  uv_loop_t *loop;
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_connect_t connect;
  uv_write_t write;
  llhttp_t parser;
  llhttp_settings_t settings;
  char *request;
  size_t request_len;
  int err;
  int status;
  bool done;
  bool complete;
  unsigned open_handles;
  stg_http_get_cb cb;
  size_t max_body;
  size_t body_len;
  size_t body_cap;
  char *body;
};

/* Starts a request (GET unless opts->method says otherwise). Returns 0 (cb
 * will be called) or UV_EINVAL / UV_ENOMEM (cb will not be called; g may be
 * freed at once). Each request uses its own connection. */
int stg_http_get(uv_loop_t *loop, stg_http_get_t *g, const stg_http_get_options_t *opts);
#define stg_http_request stg_http_get

/* Ends it early: cb gets UV_ECANCELED (unless it already finished). */
void stg_http_get_cancel(stg_http_get_t *g);
#define stg_http_request_cancel stg_http_get_cancel

#endif
