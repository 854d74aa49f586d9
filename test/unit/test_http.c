/* lib/http: the server on real sockets (127.0.0.1, port 0), driven by
 * blocking clients while its loop runs in a thread; the GET client on the
 * test's own loop. */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <uv.h>

#include "check.h"
#include "http.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

/* --- the server fixture: its loop in a thread --------------------------------------- */

enum { CMD_NONE, CMD_SHUTDOWN, CMD_ABORT };

typedef struct {
  uv_loop_t loop;
  uv_thread_t thread;
  uv_async_t async;
  uv_timer_t delay;         /* answers /slow later */
  stg_http_server_t srv;
  int port;
  atomic_int cmd;
  atomic_int slow_pending;  /* /slow requests received, not answered */
  atomic_int gone;          /* gone callbacks */
  atomic_int closed;        /* the shutdown callback ran */
  atomic_int slow_answer_rc;
  uint64_t slow_ms;         /* 0: /slow is answered only when its client goes */
  stg_http_req_t *slow_req;
} fixture_t;

static fixture_t *fx_of(stg_http_req_t *req) {
  return stg_http_req_server(req)->data;
}

static void h_ok(stg_http_req_t *req, void *data) {
  (void)data;
  stg_http_respond(req, 200, "text/plain", "ok", 2);
}

static void h_echo(stg_http_req_t *req, void *data) {
  (void)data;
  size_t len;
  const char *b = stg_http_req_body(req, &len);
  stg_http_respond(req, 200, "application/octet-stream", b, len);
}

static void h_json(stg_http_req_t *req, void *data) {
  (void)data;
  json_error_t e;
  json_t *j = stg_http_req_json(req, &e);
  if (j == NULL) {
    stg_http_respond_error(req, 400, "bad_json", e.text);
    return;
  }
  json_t *out = json_pack("{s:O,s:s,s:s}", "got", j, "query", stg_http_req_query(req),
                          "path", stg_http_req_path(req));
  stg_http_respond_json(req, 201, out);
  json_decref(out);
  json_decref(j);
}

static void on_slow_timer(uv_timer_t *t) {
  fixture_t *fx = container_of(t, fixture_t, delay);
  stg_http_req_t *req = fx->slow_req;
  fx->slow_req = NULL;
  if (req) {
    atomic_fetch_sub(&fx->slow_pending, 1);
    atomic_store(&fx->slow_answer_rc, stg_http_respond(req, 200, "text/plain", "slow", 4));
  }
}

static void on_slow_gone(stg_http_req_t *req, void *data) {
  fixture_t *fx = data;
  atomic_fetch_add(&fx->gone, 1);
  if (fx->slow_req == req) {
    fx->slow_req = NULL;
    uv_timer_stop(&fx->delay);
    atomic_fetch_sub(&fx->slow_pending, 1);
    atomic_store(&fx->slow_answer_rc, stg_http_respond(req, 200, "text/plain", "late", 4));
  }
}

static void h_slow(stg_http_req_t *req, void *data) {
  (void)data;
  fixture_t *fx = fx_of(req);
  fx->slow_req = req;
  stg_http_req_on_gone(req, on_slow_gone, fx);
  atomic_fetch_add(&fx->slow_pending, 1);
  if (fx->slow_ms)
    uv_timer_start(&fx->delay, on_slow_timer, fx->slow_ms, 0);
}

static const stg_http_route_t routes[] = {
    {"GET", "/healthz", h_ok, NULL},
    {"POST", "/echo", h_echo, NULL},
    {"PUT", "/echo", h_echo, NULL},
    {"POST", "/json/*", h_json, NULL},
    {"GET", "/slow", h_slow, NULL},
};

static void on_closed(stg_http_server_t *srv) {
  fixture_t *fx = srv->data;
  atomic_store(&fx->closed, 1);
  uv_close((uv_handle_t *)&fx->async, NULL);
  uv_close((uv_handle_t *)&fx->delay, NULL);
}

static void on_async(uv_async_t *a) {
  fixture_t *fx = container_of(a, fixture_t, async);
  int cmd = atomic_exchange(&fx->cmd, CMD_NONE);
  if (cmd == CMD_SHUTDOWN)
    stg_http_server_shutdown(&fx->srv, on_closed);
  else if (cmd == CMD_ABORT) {
    stg_http_server_shutdown(&fx->srv, on_closed);
    stg_http_server_abort(&fx->srv);
  }
}

static void fx_thread(void *arg) {
  fixture_t *fx = arg;
  uv_run(&fx->loop, UV_RUN_DEFAULT);
}

static int fx_start(fixture_t *fx, const stg_http_options_t *o) {
  memset(fx, 0, sizeof *fx);
  stg_http_options_t opts = *o;
  opts.routes = routes;
  opts.n_routes = sizeof routes / sizeof routes[0];
  if (uv_loop_init(&fx->loop) != 0)
    return -1;
  uv_async_init(&fx->loop, &fx->async, on_async);
  uv_timer_init(&fx->loop, &fx->delay);
  if (stg_http_server_init(&fx->loop, &fx->srv, &opts) != 0)
    return -1;
  fx->srv.data = fx;
  int rc = stg_http_server_listen(&fx->srv, "127.0.0.1:0");
  if (rc != 0) {
    fprintf(stderr, "listen: %s\n", uv_strerror(rc));
    return -1;
  }
  char addr[64];
  stg_http_server_address(&fx->srv, addr, sizeof addr);
  fx->port = atoi(strrchr(addr, ':') + 1);
  return uv_thread_create(&fx->thread, fx_thread, fx);
}

static void fx_command(fixture_t *fx, int cmd) {
  atomic_store(&fx->cmd, cmd);
  uv_async_send(&fx->async);
}

/* Shuts the server down (if not done yet), joins, and checks that the loop
 * closes with nothing left open. */
static int fx_stop(fixture_t *fx) {
  if (!atomic_load(&fx->closed))
    fx_command(fx, CMD_SHUTDOWN);
  uv_thread_join(&fx->thread);
  return uv_loop_close(&fx->loop);
}

/* --- a blocking client ----------------------------------------------------------------- */

static int cconnect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -errno;
  }
  return fd;
}

static int csend(int fd, const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
    if (w < 0)
      return -errno;
    s += w;
    n -= (size_t)w;
  }
  return 0;
}

#define SEND(fd, s) csend((fd), (s), strlen(s))

typedef struct {
  int status;
  char head[8192];
  char body[8192];
  size_t body_len;
} resp_t;

/* Reads one response (Content-Length framed). Returns 0, or -1 on EOF or
 * timeout before a whole response. Bytes past it are lost: use for one
 * response at a time, or read_responses for pipelined ones. */
static char pending[65536];
static size_t pending_len;

static int read_response(int fd, resp_t *r) {
  memset(r, 0, sizeof *r);
  for (;;) {
    char *end = memmem(pending, pending_len, "\r\n\r\n", 4);
    if (end) {
      size_t hl = (size_t)(end - pending) + 4;
      size_t cl = 0;
      if (hl >= sizeof r->head)
        return -1;
      memcpy(r->head, pending, hl);
      r->head[hl] = '\0';
      char *p = strcasestr(r->head, "\r\nContent-Length:");
      if (p)
        cl = strtoul(p + 17, NULL, 10);
      if (pending_len >= hl + cl) {
        r->status = atoi(r->head + 9);
        size_t bl = cl < sizeof r->body - 1 ? cl : sizeof r->body - 1;
        memcpy(r->body, pending + hl, bl);
        r->body[bl] = '\0';
        r->body_len = bl;
        memmove(pending, pending + hl + cl, pending_len - hl - cl);
        pending_len -= hl + cl;
        return 0;
      }
    }
    if (pending_len == sizeof pending)
      return -1;
    ssize_t n = recv(fd, pending + pending_len, sizeof pending - pending_len, 0);
    if (n <= 0)
      return -1;
    pending_len += (size_t)n;
  }
}

/* Waits for the server to close: 1 on EOF/reset, 0 on timeout. Discards data. */
static int wait_eof(int fd) {
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno == ECONNRESET))
      return 1;
    if (n < 0)
      return 0;
  }
}

static void reset_pending(void) { pending_len = 0; }

static const stg_http_options_t default_opts = {0};

/* --- tests ------------------------------------------------------------------------------- */

TEST(parse_addr) {
  struct sockaddr_storage ss;
  char buf[64];
  CHECK_EQ_INT(stg_http_parse_addr("127.0.0.1:7234", &ss), 0);
  CHECK_STR(stg_http_format_addr((struct sockaddr *)&ss, buf, sizeof buf), "127.0.0.1:7234");
  CHECK_EQ_INT(stg_http_parse_addr("[::1]:80", &ss), 0);
  CHECK_STR(stg_http_format_addr((struct sockaddr *)&ss, buf, sizeof buf), "[::1]:80");
  CHECK_EQ_INT(stg_http_parse_addr("localhost:1", &ss), 0);
  CHECK_STR(stg_http_format_addr((struct sockaddr *)&ss, buf, sizeof buf), "127.0.0.1:1");
  CHECK_EQ_INT(stg_http_parse_addr("127.0.0.1", &ss), UV_EINVAL);
  CHECK_EQ_INT(stg_http_parse_addr("127.0.0.1:", &ss), UV_EINVAL);
  CHECK_EQ_INT(stg_http_parse_addr("127.0.0.1:65536", &ss), UV_EINVAL);
  CHECK_EQ_INT(stg_http_parse_addr("127.0.0.1:-1", &ss), UV_EINVAL);
  CHECK_EQ_INT(stg_http_parse_addr("::1:80", &ss), UV_EINVAL);
  CHECK_EQ_INT(stg_http_parse_addr("example.com:80", &ss), UV_EINVAL);
  CHECK_EQ_INT(stg_http_parse_addr("[::1:80", &ss), UV_EINVAL);
}

TEST(keep_alive_two_requests_and_pipelining) {
  fixture_t fx;
  REQUIRE(fx_start(&fx, &default_opts) == 0);
  reset_pending();
  int fd = cconnect(fx.port);
  REQUIRE(fd >= 0);
  resp_t r;
  CHECK_EQ_INT(SEND(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 200);
  CHECK_STR(r.body, "ok");
  CHECK_CONTAINS(r.head, "Connection: keep-alive");
  CHECK_EQ_INT(SEND(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"), 0);
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 200);
  CHECK_STR(r.body, "hello");
  /* Three pipelined requests in one write, one chunked: answered in order. */
  CHECK_EQ_INT(SEND(fd, "PUT /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\none"
                        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "3\r\ntwo\r\n0\r\n\r\n"
                        "POST /json/x?a=1 HTTP/1.1\r\nContent-Length: 7\r\n\r\n[1,2,3]"), 0);
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_STR(r.body, "one");
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_STR(r.body, "two");
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 201);
  CHECK_CONTAINS(r.head, "Content-Type: application/json");
  CHECK_CONTAINS(r.body, "\"got\":[1,2,3]");
  CHECK_CONTAINS(r.body, "\"query\":\"a=1\"");
  CHECK_CONTAINS(r.body, "\"path\":\"/json/x\"");
  /* Expect: 100-continue gets the interim response before the body. */
  CHECK_EQ_INT(SEND(fd, "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\n"
                        "Content-Length: 4\r\n\r\n"), 0);
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 100);
  CHECK_EQ_INT(SEND(fd, "body"), 0);
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 200);
  CHECK_STR(r.body, "body");
  /* HTTP/1.0 without keep-alive: answered, then closed. */
  CHECK_EQ_INT(SEND(fd, "GET /healthz HTTP/1.0\r\n\r\n"), 0);
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 200);
  CHECK_CONTAINS(r.head, "Connection: close");
  CHECK(wait_eof(fd));
  close(fd);
  CHECK_EQ_INT(fx_stop(&fx), 0);
}

TEST(not_found_and_method_not_allowed) {
  fixture_t fx;
  REQUIRE(fx_start(&fx, &default_opts) == 0);
  reset_pending();
  int fd = cconnect(fx.port);
  REQUIRE(fd >= 0);
  resp_t r;
  SEND(fd, "GET /nope HTTP/1.1\r\n\r\n");
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 404);
  CHECK_CONTAINS(r.body, "{\"error\":{\"code\":\"not_found\"");
  SEND(fd, "DELETE /echo HTTP/1.1\r\n\r\n");
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 405);
  CHECK_CONTAINS(r.head, "\r\nAllow: POST, PUT\r\n");
  CHECK_CONTAINS(r.body, "\"code\":\"method_not_allowed\"");
  /* Still serving on the same connection. */
  SEND(fd, "GET /healthz HTTP/1.1\r\n\r\n");
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 200);
  close(fd);
  CHECK_EQ_INT(fx_stop(&fx), 0);
}

TEST(body_too_large_413) {
  fixture_t fx;
  stg_http_options_t o = {.max_body = 1000};
  REQUIRE(fx_start(&fx, &o) == 0);
  reset_pending();
  resp_t r;
  /* Announced by Content-Length: refused before the body. */
  int fd = cconnect(fx.port);
  REQUIRE(fd >= 0);
  SEND(fd, "POST /echo HTTP/1.1\r\nContent-Length: 1001\r\n\r\n");
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 413);
  CHECK_CONTAINS(r.body, "\"code\":\"body_too_large\"");
  CHECK_CONTAINS(r.head, "Connection: close");
  CHECK(wait_eof(fd));
  close(fd);
  /* Chunked: refused once it passes the cap. */
  reset_pending();
  fd = cconnect(fx.port);
  REQUIRE(fd >= 0);
  char chunk[700];
  memset(chunk, 'x', sizeof chunk);
  SEND(fd, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 2; i++) {
    SEND(fd, "2bc\r\n");
    csend(fd, chunk, sizeof chunk);
    SEND(fd, "\r\n");
  }
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 413);
  close(fd);
  /* Exactly at the cap: fine. */
  reset_pending();
  fd = cconnect(fx.port);
  REQUIRE(fd >= 0);
  SEND(fd, "POST /echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\n");
  char body[1000];
  memset(body, 'y', sizeof body);
  csend(fd, body, sizeof body);
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 200);
  CHECK_EQ_INT(r.body_len, 1000);
  close(fd);
  CHECK_EQ_INT(fx_stop(&fx), 0);
}

TEST(headers_too_large_431) {
  fixture_t fx;
  REQUIRE(fx_start(&fx, &default_opts) == 0); /* 16 KiB */
  reset_pending();
  int fd = cconnect(fx.port);
  REQUIRE(fd >= 0);
  size_t n = 20000;
  char *big = malloc(n + 64);
  strcpy(big, "GET /healthz HTTP/1.1\r\nX-Big: ");
  size_t l = strlen(big);
  memset(big + l, 'a', n);
  strcpy(big + l + n, "\r\n\r\n");
  csend(fd, big, strlen(big));
  free(big);
  resp_t r;
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 431);
  CHECK_CONTAINS(r.body, "\"code\":\"headers_too_large\"");
  CHECK(wait_eof(fd));
  close(fd);
  /* Too many small headers count too. */
  reset_pending();
  fd = cconnect(fx.port);
  REQUIRE(fd >= 0);
  SEND(fd, "GET /healthz HTTP/1.1\r\n");
  for (int i = 0; i < 200; i++) {
    char h[32];
    snprintf(h, sizeof h, "X-%d: 1\r\n", i);
    SEND(fd, h);
  }
  SEND(fd, "\r\n");
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 431);
  close(fd);
  CHECK_EQ_INT(fx_stop(&fx), 0);
}

TEST(idle_timeout_closes) {
  fixture_t fx;
  stg_http_options_t o = {.idle_timeout_ms = 200};
  REQUIRE(fx_start(&fx, &o) == 0);
  reset_pending();
  /* A connection that never sends. */
  int fd = cconnect(fx.port);
  REQUIRE(fd >= 0);
  CHECK(wait_eof(fd));
  close(fd);
  /* A keep-alive connection after one request. */
  fd = cconnect(fx.port);
  REQUIRE(fd >= 0);
  SEND(fd, "GET /healthz HTTP/1.1\r\n\r\n");
  resp_t r;
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 200);
  CHECK(wait_eof(fd));
  close(fd);
  /* Half a request. */
  fd = cconnect(fx.port);
  REQUIRE(fd >= 0);
  SEND(fd, "GET /healthz HTTP/1.1\r\nHost:");
  CHECK(wait_eof(fd));
  close(fd);
  CHECK_EQ_INT(fx_stop(&fx), 0);
}

TEST(max_connections_503) {
  fixture_t fx;
  stg_http_options_t o = {.max_connections = 2};
  REQUIRE(fx_start(&fx, &o) == 0);
  reset_pending();
  int a = cconnect(fx.port), b = cconnect(fx.port);
  REQUIRE(a >= 0 && b >= 0);
  resp_t r;
  SEND(a, "GET /healthz HTTP/1.1\r\n\r\n");
  CHECK_EQ_INT(read_response(a, &r), 0);
  SEND(b, "GET /healthz HTTP/1.1\r\n\r\n");
  CHECK_EQ_INT(read_response(b, &r), 0);
  int c = cconnect(fx.port);
  REQUIRE(c >= 0);
  SEND(c, "GET /healthz HTTP/1.1\r\n\r\n");
  CHECK_EQ_INT(read_response(c, &r), 0);
  CHECK_EQ_INT(r.status, 503);
  CHECK_CONTAINS(r.body, "\"code\":\"too_many_connections\"");
  CHECK(wait_eof(c));
  close(c);
  /* One slot freed: served again. Poll: the server sees the close
   * asynchronously. */
  close(a);
  int served = 0;
  for (int i = 0; i < 200 && !served; i++) {
    reset_pending();
    int d = cconnect(fx.port);
    REQUIRE(d >= 0);
    SEND(d, "GET /healthz HTTP/1.1\r\n\r\n");
    if (read_response(d, &r) == 0 && r.status == 200)
      served = 1;
    close(d);
    if (!served)
      usleep(20000);
  }
  CHECK(served);
  close(b);
  CHECK_EQ_INT(fx_stop(&fx), 0);
}

TEST(malformed_request_400_server_keeps_serving) {
  fixture_t fx;
  REQUIRE(fx_start(&fx, &default_opts) == 0);
  reset_pending();
  int fd = cconnect(fx.port);
  REQUIRE(fd >= 0);
  SEND(fd, "THIS IS NOT HTTP\r\n\r\n");
  resp_t r;
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 400);
  CHECK_CONTAINS(r.body, "\"code\":\"bad_request\"");
  CHECK(wait_eof(fd));
  close(fd);
  reset_pending();
  fd = cconnect(fx.port);
  REQUIRE(fd >= 0);
  SEND(fd, "GET /healthz HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 400);
  close(fd);
  reset_pending();
  fd = cconnect(fx.port);
  REQUIRE(fd >= 0);
  SEND(fd, "GET /healthz HTTP/1.1\r\n\r\n");
  CHECK_EQ_INT(read_response(fd, &r), 0);
  CHECK_EQ_INT(r.status, 200);
  close(fd);
  CHECK_EQ_INT(fx_stop(&fx), 0);
}

static void wait_until(atomic_int *v, int want) {
  for (int i = 0; i < 1000 && atomic_load(v) != want; i++)
    usleep(10000);
}

TEST(graceful_shutdown_finishes_in_flight) {
  fixture_t fx;
  REQUIRE(fx_start(&fx, &default_opts) == 0);
  fx.slow_ms = 300;
  reset_pending();
  /* An idle keep-alive connection... */
  int idle = cconnect(fx.port);
  REQUIRE(idle >= 0);
  resp_t r;
  SEND(idle, "GET /healthz HTTP/1.1\r\n\r\n");
  CHECK_EQ_INT(read_response(idle, &r), 0);
  /* ...and one waiting for a delayed answer. */
  int busy = cconnect(fx.port);
  REQUIRE(busy >= 0);
  SEND(busy, "GET /slow HTTP/1.1\r\n\r\n");
  wait_until(&fx.slow_pending, 1);
  REQUIRE(atomic_load(&fx.slow_pending) == 1);
  fx_command(&fx, CMD_SHUTDOWN);
  CHECK(wait_eof(idle)); /* closed at once */
  close(idle);
  /* New connections are refused once the listener is closed. */
  int refused = 0;
  for (int i = 0; i < 200 && !refused; i++) {
    int d = cconnect(fx.port);
    if (d == -ECONNREFUSED)
      refused = 1;
    else {
      if (d >= 0)
        close(d);
      usleep(10000);
    }
  }
  CHECK(refused);
  CHECK_EQ_INT(atomic_load(&fx.closed), 0); /* still answering */
  /* The client sends more meanwhile: read (and held), not fatal. */
  SEND(busy, "GET /healthz HTTP/1.1\r\n\r\n");
  CHECK_EQ_INT(read_response(busy, &r), 0);
  CHECK_EQ_INT(r.status, 200);
  CHECK_STR(r.body, "slow");
  CHECK_CONTAINS(r.head, "Connection: close");
  CHECK(wait_eof(busy));
  close(busy);
  CHECK_EQ_INT(fx_stop(&fx), 0);
  CHECK_EQ_INT(atomic_load(&fx.closed), 1);
  CHECK_EQ_INT(atomic_load(&fx.gone), 0);
  CHECK_EQ_INT(atomic_load(&fx.slow_answer_rc), 0);
}

TEST(client_gone_callback) {
  fixture_t fx;
  REQUIRE(fx_start(&fx, &default_opts) == 0);
  fx.slow_ms = 0; /* answered only from the gone callback */
  int fd = cconnect(fx.port);
  REQUIRE(fd >= 0);
  SEND(fd, "GET /slow HTTP/1.1\r\n\r\n");
  wait_until(&fx.slow_pending, 1);
  REQUIRE(atomic_load(&fx.slow_pending) == 1);
  close(fd);
  wait_until(&fx.gone, 1);
  CHECK_EQ_INT(atomic_load(&fx.gone), 1);
  CHECK_EQ_INT(atomic_load(&fx.slow_pending), 0);
  CHECK_EQ_INT(atomic_load(&fx.slow_answer_rc), UV_ECONNRESET);
  CHECK_EQ_INT(fx_stop(&fx), 0);
}

TEST(abort_closes_pending) {
  fixture_t fx;
  REQUIRE(fx_start(&fx, &default_opts) == 0);
  fx.slow_ms = 0;
  int fd = cconnect(fx.port);
  REQUIRE(fd >= 0);
  SEND(fd, "GET /slow HTTP/1.1\r\n\r\n");
  wait_until(&fx.slow_pending, 1);
  REQUIRE(atomic_load(&fx.slow_pending) == 1);
  fx_command(&fx, CMD_ABORT);
  CHECK(wait_eof(fd));
  close(fd);
  CHECK_EQ_INT(fx_stop(&fx), 0);
  CHECK_EQ_INT(atomic_load(&fx.gone), 1);
  CHECK_EQ_INT(atomic_load(&fx.closed), 1);
}

static void on_noop_closed(stg_http_server_t *srv) { *(int *)srv->data = 1; }

TEST(bind_errors) {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  stg_http_server_t a, b;
  int closed_a = 0, closed_b = 0;
  REQUIRE(stg_http_server_init(&loop, &a, &default_opts) == 0);
  REQUIRE(stg_http_server_init(&loop, &b, &default_opts) == 0);
  a.data = &closed_a;
  b.data = &closed_b;
  CHECK_EQ_INT(stg_http_server_listen(&a, "127.0.0.1:0"), 0);
  char addr[64];
  CHECK_EQ_INT(stg_http_server_address(&a, addr, sizeof addr), 0);
  CHECK_EQ_INT(stg_http_server_listen(&b, addr), UV_EADDRINUSE);
  CHECK_EQ_INT(stg_http_server_listen(&b, "nonsense"), UV_EINVAL);
  stg_http_server_shutdown(&a, on_noop_closed);
  stg_http_server_shutdown(&b, on_noop_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(closed_a && closed_b);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(ipv6_listen) {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  stg_http_server_t s;
  int closed = 0;
  REQUIRE(stg_http_server_init(&loop, &s, &default_opts) == 0);
  s.data = &closed;
  int rc = stg_http_server_listen(&s, "[::1]:0");
  if (rc == 0) {
    char addr[64];
    CHECK_EQ_INT(stg_http_server_address(&s, addr, sizeof addr), 0);
    CHECK(strncmp(addr, "[::1]:", 6) == 0);
  } else {
    fprintf(stderr, "  (no IPv6 loopback here: %s)\n", uv_strerror(rc));
    CHECK(rc == UV_EADDRNOTAVAIL || rc == UV_EAFNOSUPPORT);
  }
  stg_http_server_shutdown(&s, on_noop_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(closed);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

/* --- the GET client ------------------------------------------------------------------- */

typedef struct {
  stg_http_get_t g;
  int called, err, status;
  char body[8192];
} get_result_t;

static void on_get(stg_http_get_t *g, int err, int status, const char *body, size_t len) {
  get_result_t *r = container_of(g, get_result_t, g);
  r->called++;
  r->err = err;
  r->status = status;
  snprintf(r->body, sizeof r->body, "%.*s", (int)len, body);
}

static int get_once(const char *addr, const char *path, uint64_t timeout_ms, get_result_t *r) {
  uv_loop_t loop;
  memset(r, 0, sizeof *r);
  uv_loop_init(&loop);
  stg_http_get_options_t o = {.addr = addr, .path = path, .timeout_ms = timeout_ms, .cb = on_get};
  int rc = stg_http_get(&loop, &r->g, &o);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    return -1000;
  return rc;
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  bind(fd, (struct sockaddr *)&sa, sizeof sa);
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  close(fd);
  return ntohs(sa.sin_port);
}

TEST(get_client) {
  fixture_t fx;
  REQUIRE(fx_start(&fx, &default_opts) == 0);
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", fx.port);
  get_result_t r;
  CHECK_EQ_INT(get_once(addr, "/healthz", 5000, &r), 0);
  CHECK_EQ_INT(r.called, 1);
  CHECK_EQ_INT(r.err, 0);
  CHECK_EQ_INT(r.status, 200);
  CHECK_STR(r.body, "ok");
  CHECK_EQ_INT(get_once(addr, "/nope", 5000, &r), 0);
  CHECK_EQ_INT(r.err, 0);
  CHECK_EQ_INT(r.status, 404);
  CHECK_CONTAINS(r.body, "not_found");
  CHECK_EQ_INT(get_once(addr, "no-slash", 5000, &r), UV_EINVAL);
  CHECK_EQ_INT(r.called, 0);
  CHECK_EQ_INT(get_once("bogus", "/", 5000, &r), UV_EINVAL);
  CHECK_EQ_INT(r.called, 0);
  CHECK_EQ_INT(fx_stop(&fx), 0);

  /* Nobody listening. */
  snprintf(addr, sizeof addr, "127.0.0.1:%d", free_port());
  CHECK_EQ_INT(get_once(addr, "/healthz", 5000, &r), 0);
  CHECK_EQ_INT(r.called, 1);
  CHECK_EQ_INT(r.err, UV_ECONNREFUSED);
  CHECK_EQ_INT(r.status, 0);
}

TEST(get_client_timeout_and_cancel) {
  /* A socket that listens but never answers: connect succeeds (backlog). */
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  REQUIRE(bind(ls, (struct sockaddr *)&sa, sizeof sa) == 0);
  REQUIRE(listen(ls, 8) == 0);
  getsockname(ls, (struct sockaddr *)&sa, &sl);
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
  get_result_t r;
  CHECK_EQ_INT(get_once(addr, "/healthz", 200, &r), 0);
  CHECK_EQ_INT(r.called, 1);
  CHECK_EQ_INT(r.err, UV_ETIMEDOUT);

  uv_loop_t loop;
  uv_loop_init(&loop);
  memset(&r, 0, sizeof r);
  stg_http_get_options_t o = {.addr = addr, .path = "/x", .timeout_ms = 60000, .cb = on_get};
  CHECK_EQ_INT(stg_http_get(&loop, &r.g, &o), 0);
  stg_http_get_cancel(&r.g);
  stg_http_get_cancel(&r.g); /* twice is harmless */
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(r.called, 1);
  CHECK_EQ_INT(r.err, UV_ECANCELED);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  close(ls);
}

/* stg_http_request: POST with a JSON body (the server echoes it back
 * parsed), a response body larger than the default cap read with a larger
 * max_body, and over max_body refused with UV_E2BIG. */
static int request_once(const stg_http_request_options_t *opts, get_result_t *r) {
  uv_loop_t loop;
  memset(r, 0, sizeof *r);
  uv_loop_init(&loop);
  int rc = stg_http_request(&loop, &r->g, opts);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    return -1000;
  return rc;
}

TEST(request_client_post_json_and_max_body) {
  fixture_t fx;
  REQUIRE(fx_start(&fx, &default_opts) == 0);
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", fx.port);
  get_result_t r;
  static const char json[] = "{\"kind\":\"workflow\",\"n\":3}";
  stg_http_request_options_t o = {.addr = addr, .path = "/json/claim?wait=1s",
                                  .timeout_ms = 5000, .cb = on_get, .method = "POST",
                                  .body = json, .body_len = sizeof json - 1};
  CHECK_EQ_INT(request_once(&o, &r), 0);
  CHECK_EQ_INT(r.called, 1);
  CHECK_EQ_INT(r.err, 0);
  CHECK_EQ_INT(r.status, 201);
  json_t *got = json_loads(r.body, 0, NULL);
  REQUIRE(got != NULL);
  CHECK_STR(json_string_value(json_object_get(json_object_get(got, "got"), "kind")), "workflow");
  CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(got, "got"), "n")), 3);
  CHECK_STR(json_string_value(json_object_get(got, "query")), "wait=1s");
  CHECK_STR(json_string_value(json_object_get(got, "path")), "/json/claim");
  json_decref(got);

  /* malformed JSON reaches the server's handler as such */
  o.body = "{\"kind\":";
  o.body_len = strlen(o.body);
  CHECK_EQ_INT(request_once(&o, &r), 0);
  CHECK_EQ_INT(r.err, 0);
  CHECK_EQ_INT(r.status, 400);
  CHECK_CONTAINS(r.body, "bad_json");

  /* an echo of 6000 bytes: over the default 4 KiB cap, within 8000 */
  static char big[6000];
  memset(big, 'x', sizeof big);
  stg_http_request_options_t e = {.addr = addr, .path = "/echo", .timeout_ms = 5000,
                                  .cb = on_get, .method = "PUT", .body = big,
                                  .body_len = sizeof big, .content_type = "text/plain"};
  CHECK_EQ_INT(request_once(&e, &r), 0);
  CHECK_EQ_INT(r.err, UV_E2BIG);
  CHECK_EQ_INT(r.status, 0);
  e.max_body = 8000;
  CHECK_EQ_INT(request_once(&e, &r), 0);
  CHECK_EQ_INT(r.err, 0);
  CHECK_EQ_INT(r.status, 200);
  CHECK_EQ_INT(strlen(r.body), sizeof big);
  e.max_body = 5999;
  CHECK_EQ_INT(request_once(&e, &r), 0);
  CHECK_EQ_INT(r.err, UV_E2BIG);
  CHECK_EQ_INT(fx_stop(&fx), 0);
}

int main(void) {
  RUN(parse_addr);
  RUN(keep_alive_two_requests_and_pipelining);
  RUN(not_found_and_method_not_allowed);
  RUN(body_too_large_413);
  RUN(headers_too_large_431);
  RUN(idle_timeout_closes);
  RUN(max_connections_503);
  RUN(malformed_request_400_server_keeps_serving);
  RUN(graceful_shutdown_finishes_in_flight);
  RUN(client_gone_callback);
  RUN(abort_closes_pending);
  RUN(bind_errors);
  RUN(ipv6_listen);
  RUN(get_client);
  RUN(get_client_timeout_and_cancel);
  RUN(request_client_post_json_and_max_body);
  return CHECK_DONE();
}
