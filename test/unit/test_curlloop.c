/* stg_curlloop against an in-process lib/http server on the same loop
 * (plain HTTP on a free loopback port). Each test runs on a fresh loop with
 * a guard timer (a hang fails instead of blocking), and checks the loop
 * closes cleanly. */
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "check.h"
#include "curlloop.h"
#include "http.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

enum { GUARD_MS = 20000, MAX_HELD = 4, NXFER = 3 };

typedef struct {
  stg_curlloop_xfer_t x;
  CURL *easy;
  char body[256];
  size_t len;
  long status;
  CURLcode rc;
  int dones;
} xfer_t;

/* One test's world; static so that the server handlers can reach it. */
static struct {
  uv_loop_t loop;
  stg_curlloop_t l;
  stg_http_server_t srv;
  uv_timer_t guard;
  char base[64];              /* "http://127.0.0.1:<port>" */
  stg_http_req_t *held[MAX_HELD];
  int n_held;                 /* requests held unanswered */
  int hold_until;             /* /hold/ answers all once this many are held */
  int requests;               /* requests the server saw */
  xfer_t t[NXFER];
  int closes;                 /* close callbacks of l */
  int dones;                  /* done callbacks in all */
  bool server_down;
  bool timed_out;
  void (*on_done)(xfer_t *t); /* the test's reaction to a finished transfer */
} fx;

/* --- the server ------------------------------------------------------------------ */

static void answer(stg_http_req_t *req) {
  const char *p = stg_http_req_path(req);
  stg_http_respond(req, 200, "text/plain", p, strlen(p));
}

static void on_gone(stg_http_req_t *req, void *data) {
  (void)data;
  for (int i = 0; i < fx.n_held; i++)
    if (fx.held[i] == req)
      fx.held[i] = fx.held[--fx.n_held];
  answer(req); /* discarded, but frees req */
}

/* GET /hold/<x>: held until hold_until requests are held, then all answered
 * with their paths. Two transfers that are not run at once never finish. */
static void handle_hold(stg_http_req_t *req, void *data) {
  (void)data;
  fx.requests++;
  if (fx.n_held == MAX_HELD) {
    stg_http_respond(req, 503, "text/plain", "full", 4);
    return;
  }
  fx.held[fx.n_held++] = req;
  stg_http_req_on_gone(req, on_gone, NULL);
  if (fx.n_held < fx.hold_until)
    return;
  while (fx.n_held > 0)
    answer(fx.held[--fx.n_held]);
}

/* GET /now/<x>: answered at once. */
static void handle_now(stg_http_req_t *req, void *data) {
  (void)data;
  fx.requests++;
  answer(req);
}

/* Not const: close_while_running swaps a handler. */
static stg_http_route_t routes[] = {
    {"GET", "/hold/*", handle_hold, NULL},
    {"GET", "/now/*", handle_now, NULL},
};

static void server_down(void) {
  if (fx.server_down)
    return;
  fx.server_down = true;
  stg_http_server_shutdown(&fx.srv, NULL);
}

/* --- the client ------------------------------------------------------------------ */

static size_t on_write(char *buf, size_t size, size_t n, void *ud) {
  xfer_t *t = ud;
  size_t len = size * n;
  if (len > sizeof t->body - 1 - t->len)
    return 0;
  memcpy(t->body + t->len, buf, len);
  t->len += len;
  t->body[t->len] = '\0';
  return len;
}

/* Counts the handles of l still on the loop: its polls (the only ones on
 * this loop) and its timer. */
static void count_own(uv_handle_t *h, void *arg) {
  if (h->type == UV_POLL || h == (uv_handle_t *)&fx.l.timer)
    (*(int *)arg)++;
}

static void on_closed(stg_curlloop_t *l) {
  CHECK(l == &fx.l);
  fx.closes++;
  int own = 0;
  uv_walk(&fx.loop, count_own, &own);
  CHECK_EQ_INT(own, 0); /* after every uv handle of l is closed */
  for (int i = 0; i < NXFER; i++) {
    if (fx.t[i].easy != NULL) {
      CHECK(!stg_curlloop_active(&fx.t[i].x));
      curl_easy_cleanup(fx.t[i].easy);
      fx.t[i].easy = NULL;
    }
  }
  server_down();
  uv_close((uv_handle_t *)&fx.guard, NULL);
}

static void on_done(stg_curlloop_xfer_t *x, CURLcode rc) {
  xfer_t *t = container_of(x, xfer_t, x);
  CHECK(!stg_curlloop_active(x));
  t->dones++;
  fx.dones++;
  t->rc = rc;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
  curl_easy_cleanup(t->easy);
  t->easy = NULL;
  fx.on_done(t);
}

/* Starts fx.t[i] on GET <base><path>. */
static int xfer_add(int i, const char *path) {
  xfer_t *t = &fx.t[i];
  char url[160];
  snprintf(url, sizeof url, "%s%s", fx.base, path);
  memset(t, 0, sizeof *t);
  t->easy = curl_easy_init();
  if (t->easy == NULL)
    return UV_ENOMEM;
  curl_easy_setopt(t->easy, CURLOPT_URL, url);
  curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
  int rc = stg_curlloop_add(&fx.l, &t->x, t->easy, on_done);
  if (rc < 0) {
    curl_easy_cleanup(t->easy);
    t->easy = NULL;
  }
  return rc;
}

static void on_guard(uv_timer_t *h) {
  (void)h;
  fx.timed_out = true;
  fprintf(stderr, "test timed out after %d ms\n", GUARD_MS);
  stg_http_server_abort(&fx.srv);
  stg_curlloop_close(&fx.l, on_closed);
}

/* A fresh loop, the server listening, l initialised, the guard armed. */
static int setup(void (*react)(xfer_t *t)) {
  memset(&fx, 0, sizeof fx);
  fx.on_done = react;
  if (uv_loop_init(&fx.loop) != 0)
    return -1;
  stg_http_options_t so = {0};
  so.routes = routes;
  so.n_routes = sizeof routes / sizeof routes[0];
  if (stg_http_server_init(&fx.loop, &fx.srv, &so) != 0)
    return -1;
  char addr[48];
  if (stg_http_server_listen(&fx.srv, "127.0.0.1:0") != 0 ||
      stg_http_server_address(&fx.srv, addr, sizeof addr) != 0) {
    server_down();
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    return -1;
  }
  snprintf(fx.base, sizeof fx.base, "http://%s", addr);
  fx.l.data = &fx;
  int rc = stg_curlloop_init(&fx.loop, &fx.l);
  CHECK_EQ_INT(rc, 0);
  CHECK(fx.l.data == &fx); /* kept */
  if (rc != 0) {
    server_down();
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    return -1;
  }
  uv_timer_init(&fx.loop, &fx.guard);
  uv_timer_start(&fx.guard, on_guard, GUARD_MS, 0);
  return 0;
}

static void run_and_close_loop(void) {
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  CHECK(!fx.timed_out);
  CHECK_EQ_INT(fx.closes, 1);
  CHECK_EQ_INT(uv_loop_close(&fx.loop), 0);
}

/* --- tests ------------------------------------------------------------------------ */

static void close_after_two(xfer_t *t) {
  (void)t;
  if (fx.dones == 2)
    stg_curlloop_close(&fx.l, on_closed);
}

TEST(two_at_once) {
  REQUIRE(setup(close_after_two) == 0);
  fx.hold_until = 2; /* neither is answered before both are in */
  CHECK_EQ_INT(xfer_add(0, "/hold/a"), 0);
  CHECK_EQ_INT(xfer_add(1, "/hold/b"), 0);
  CHECK(stg_curlloop_active(&fx.t[0].x));
  CHECK(stg_curlloop_active(&fx.t[1].x));
  CHECK_EQ_INT(fx.dones, 0); /* never from inside add */
  run_and_close_loop();
  for (int i = 0; i < 2; i++) {
    CHECK_EQ_INT(fx.t[i].dones, 1);
    CHECK_EQ_INT(fx.t[i].rc, CURLE_OK);
    CHECK_EQ_INT(fx.t[i].status, 200);
  }
  CHECK_STR(fx.t[0].body, "/hold/a");
  CHECK_STR(fx.t[1].body, "/hold/b");
  CHECK_EQ_INT(fx.requests, 2);
}

/* Adds the next transfer from inside done (as stg_fetch does between its
 * steps), on the pooled connection; the last one closes the loop. */
static void chain(xfer_t *t) {
  int i = (int)(t - fx.t);
  if (i + 1 < NXFER) {
    char path[32];
    snprintf(path, sizeof path, "/now/%d", i + 1);
    CHECK_EQ_INT(xfer_add(i + 1, path), 0);
    return;
  }
  stg_curlloop_close(&fx.l, on_closed);
  stg_curlloop_close(&fx.l, on_closed); /* twice: a no-op */
}

TEST(add_from_done) {
  REQUIRE(setup(chain) == 0);
  CHECK_EQ_INT(xfer_add(0, "/now/0"), 0);
  run_and_close_loop();
  for (int i = 0; i < NXFER; i++) {
    char want[32];
    snprintf(want, sizeof want, "/now/%d", i);
    CHECK_EQ_INT(fx.t[i].dones, 1);
    CHECK_EQ_INT(fx.t[i].status, 200);
    CHECK_STR(fx.t[i].body, want);
  }
  CHECK_EQ_INT(fx.requests, NXFER);
}

static void never(xfer_t *t) {
  fprintf(stderr, "transfer %d finished (rc %d): not expected\n", (int)(t - fx.t), (int)t->rc);
  CHECK(0);
}

/* Closes l from the server's handler: the transfer is running (its request
 * arrived) and is never answered. */
static void handle_close(stg_http_req_t *req, void *data) {
  handle_hold(req, data);
  CHECK(stg_curlloop_active(&fx.t[0].x));
  stg_curlloop_close(&fx.l, on_closed);
  CHECK(!stg_curlloop_active(&fx.t[0].x));
  CHECK_EQ_INT(fx.closes, 0); /* never from inside close */
  CHECK(fx.t[0].easy != NULL); /* still the caller's */
  CHECK_EQ_INT(xfer_add(1, "/now/late"), UV_EINVAL);
}

TEST(close_while_running) {
  REQUIRE(setup(never) == 0);
  fx.hold_until = MAX_HELD + 1; /* never answered */
  stg_http_route_t *r = &routes[0];
  stg_http_handler_fn saved = r->handler;
  r->handler = handle_close;
  CHECK_EQ_INT(xfer_add(0, "/hold/forever"), 0);
  run_and_close_loop();
  r->handler = saved;
  CHECK_EQ_INT(fx.dones, 0);
  CHECK_EQ_INT(fx.requests, 1);
  CHECK_EQ_INT(fx.n_held, 0); /* the server saw the connection go */
}

static void close_at_once(xfer_t *t) {
  (void)t;
  stg_curlloop_close(&fx.l, on_closed);
}

TEST(connect_refused_is_a_result) {
  REQUIRE(setup(close_at_once) == 0);
  /* A port nobody listens on: bind one, then close it. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  REQUIRE(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  REQUIRE(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
  close(fd);
  snprintf(fx.base, sizeof fx.base, "http://127.0.0.1:%d", ntohs(sa.sin_port));
  CHECK_EQ_INT(xfer_add(0, "/x"), 0);
  run_and_close_loop();
  CHECK_EQ_INT(fx.t[0].dones, 1);
  CHECK_EQ_INT(fx.t[0].rc, CURLE_COULDNT_CONNECT);
  CHECK_EQ_INT(fx.t[0].status, 0);
}

TEST(remove_then_close_idle) {
  REQUIRE(setup(close_at_once) == 0);
  fx.hold_until = MAX_HELD + 1;
  CHECK_EQ_INT(xfer_add(0, "/hold/removed"), 0);
  stg_curlloop_remove(&fx.t[0].x);
  CHECK(!stg_curlloop_active(&fx.t[0].x));
  stg_curlloop_remove(&fx.t[0].x); /* twice: a no-op */
  CHECK_EQ_INT(xfer_add(1, "/now/kept"), 0);
  run_and_close_loop();
  CHECK_EQ_INT(fx.t[0].dones, 0);
  CHECK_EQ_INT(fx.t[1].dones, 1);
  CHECK_STR(fx.t[1].body, "/now/kept");
  CHECK_EQ_INT(fx.requests, 1); /* the removed one never went out */
}

TEST(close_unused) {
  REQUIRE(setup(never) == 0);
  stg_curlloop_close(&fx.l, on_closed);
  CHECK_EQ_INT(fx.closes, 0);
  run_and_close_loop();
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  RUN(two_at_once);
  RUN(add_from_done);
  RUN(close_while_running);
  RUN(connect_refused_is_a_result);
  RUN(remove_then_close_idle);
  RUN(close_unused);
  return CHECK_DONE();
}
