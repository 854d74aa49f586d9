/* stg_curluv against the helper's fake-llm (plain HTTP) and
 * stg-test-tls-server (HTTPS), both started here on free loopback ports.
 * Every test runs one or two requests on a fresh loop and checks the loop
 * closes cleanly. */
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "check.h"
#include "spawn_port.h"
#include "curluv.h"

extern char **environ;

static char helper[PATH_MAX], tls_bin[PATH_MAX], certs[PATH_MAX], tmp[256];

typedef struct {
  pid_t pid;
  int port;
  char portfile[512];
  char log[PATH_MAX];
} server_t;

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return NULL;
  char *buf = calloc(1, 1 << 16);
  size_t n = fread(buf, 1, (1 << 16) - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

static int llm_start(server_t *s, const char *mode) {
  static int seq;
  snprintf(s->portfile, sizeof s->portfile, "%s/llm-%d.port", tmp, ++seq);
  snprintf(s->log, sizeof s->log, "%s.log", s->portfile);
  char *argv[] = {helper, "fake-llm", "0", s->portfile, (char *)mode, NULL};
  if (posix_spawn(&s->pid, helper, NULL, NULL, argv, environ) != 0)
    return -1;
  for (int i = 0; i < 1000; i++) { /* up to 10 s */
    char *p = slurp(s->portfile);
    if (p != NULL) {
      s->port = atoi(p);
      free(p);
      return s->port > 0 ? 0 : -1;
    }
    usleep(10000);
  }
  return -1;
}

static int tls_start(server_t *s, const char *root) {
  char cert[PATH_MAX + 16], key[PATH_MAX + 16];
  snprintf(cert, sizeof cert, "%s/server.crt", certs);
  snprintf(key, sizeof key, "%s/server.key", certs);
  snprintf(s->log, sizeof s->log, "%s/tls.log", tmp);
  char *argv[] = {tls_bin, "--root", (char *)root, "--cert", cert, "--key", key, "--log", s->log,
                  NULL};
  s->port = spawn_port(argv, &s->pid);
  return s->port > 0 ? 0 : -1;
}

static void server_stop(server_t *s) { spawn_stop(&s->pid); }

/* --- one request ---------------------------------------------------------------- */

typedef struct {
  stg_curluv_t c;
  int calls;
  int err;
  long status;
  char body[8192];
  size_t len;
  char errmsg[512];
} result_t;

static void on_done(stg_curluv_t *c, int err, long status, const char *body, size_t len) {
  result_t *r = c->data;
  r->calls++;
  r->err = err;
  r->status = status;
  r->len = len;
  snprintf(r->body, sizeof r->body, "%s", body);
  snprintf(r->errmsg, sizeof r->errmsg, "%s", stg_curluv_errmsg(c));
  CHECK(!stg_curluv_active(c));
}

/* Runs one request to completion on a fresh loop; returns start's result. */
static int run_one(result_t *r, stg_curluv_options_t *o) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  memset(r, 0, sizeof *r);
  o->cb = on_done;
  o->data = r;
  int rc = stg_curluv_start(&loop, &r->c, o);
  if (rc == 0)
    CHECK(stg_curluv_active(&r->c));
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  if (rc == 0)
    CHECK_EQ_INT(r->calls, 1);
  else
    CHECK_EQ_INT(r->calls, 0);
  return rc;
}

static const char ollama_body[] =
    "{\"model\":\"m1\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}],"
    "\"stream\":false}";

TEST(post_json_with_bearer) {
  server_t s = {0};
  REQUIRE(llm_start(&s, "ok") == 0);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/api/chat", s.port);
  stg_curluv_options_t o = {0};
  o.url = url;
  o.body = ollama_body;
  o.body_len = strlen(ollama_body);
  o.bearer = "sk-test-secret-42";
  result_t r;
  CHECK_EQ_INT(run_one(&r, &o), 0);
  CHECK_EQ_INT(r.err, 0);
  CHECK_EQ_INT(r.status, 200);
  CHECK_CONTAINS(r.body, "echo[m1]: hello there");
  CHECK_EQ_INT(r.len, strlen(r.body));
  char *log = slurp(s.log);
  CHECK_CONTAINS(log, "POST /api/chat model=m1 auth=Bearer sk-test-secret-42 status=200");
  free(log);
  server_stop(&s);
}

TEST(status_is_not_an_error) {
  server_t s = {0};
  REQUIRE(llm_start(&s, "500-then-ok") == 0);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", s.port);
  stg_curluv_options_t o = {0};
  o.url = url;
  o.body = ollama_body;
  o.body_len = strlen(ollama_body);
  result_t r;
  CHECK_EQ_INT(run_one(&r, &o), 0);
  CHECK_EQ_INT(r.err, 0);
  CHECK_EQ_INT(r.status, 500);
  CHECK_CONTAINS(r.body, "temporarily broken");
  CHECK_EQ_INT(run_one(&r, &o), 0);
  CHECK_EQ_INT(r.status, 200);
  CHECK_CONTAINS(r.body, "\"choices\"");
  char *log = slurp(s.log);
  CHECK_CONTAINS(log, "auth=- status=500"); /* no bearer: no header */
  free(log);
  server_stop(&s);
}

TEST(connection_refused) {
  /* A port nobody listens on: bind one, then close it. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  REQUIRE(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  close(fd);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/api/chat", ntohs(sa.sin_port));
  stg_curluv_options_t o = {0};
  o.url = url;
  o.bearer = "sk-never-in-messages";
  result_t r;
  CHECK_EQ_INT(run_one(&r, &o), 0);
  CHECK_EQ_INT(r.err, UV_ECONNREFUSED);
  CHECK_EQ_INT(r.status, 0);
  CHECK_STR(r.body, "");
  CHECK_CONTAINS(r.errmsg, "Failed to connect");
  CHECK(strstr(r.errmsg, "sk-never") == NULL);
}

TEST(timeout) {
  server_t s = {0};
  REQUIRE(llm_start(&s, "slow:20000") == 0);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/api/chat", s.port);
  stg_curluv_options_t o = {0};
  o.url = url;
  o.body = ollama_body;
  o.body_len = strlen(ollama_body);
  o.timeout_ms = 300;
  result_t r;
  CHECK_EQ_INT(run_one(&r, &o), 0);
  CHECK_EQ_INT(r.err, UV_ETIMEDOUT);
  CHECK_CONTAINS(r.errmsg, "timed out");
  server_stop(&s);
}

TEST(body_cap) {
  server_t s = {0};
  REQUIRE(llm_start(&s, "ok") == 0);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/api/chat", s.port);
  stg_curluv_options_t o = {0};
  o.url = url;
  o.body = ollama_body;
  o.body_len = strlen(ollama_body);
  o.max_body = 16;
  result_t r;
  CHECK_EQ_INT(run_one(&r, &o), 0);
  CHECK_EQ_INT(r.err, UV_E2BIG);
  CHECK_CONTAINS(r.errmsg, "over 16 bytes");
  server_stop(&s);
}

static void on_cancel_timer(uv_timer_t *t) {
  stg_curluv_cancel(t->data);
  stg_curluv_cancel(t->data); /* twice: a no-op */
  uv_close((uv_handle_t *)t, NULL);
}

TEST(cancel) {
  server_t s = {0};
  REQUIRE(llm_start(&s, "slow:20000") == 0);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/api/chat", s.port);
  stg_curluv_options_t o = {0};
  o.url = url;
  o.body = ollama_body;
  o.body_len = strlen(ollama_body);
  o.cb = on_done;
  result_t r;
  memset(&r, 0, sizeof r);
  o.data = &r;
  uv_loop_t loop;
  uv_loop_init(&loop);
  REQUIRE(stg_curluv_start(&loop, &r.c, &o) == 0);
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  t.data = &r.c;
  uv_timer_start(&t, on_cancel_timer, 100, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  CHECK_EQ_INT(r.calls, 1);
  CHECK_EQ_INT(r.err, UV_ECANCELED);
  stg_curluv_cancel(&r.c); /* after the callback: a no-op */
  server_stop(&s);
}

/* The callback starts the next request on the same object. */
static int chain_left;
static stg_curluv_options_t chain_opts;
static uv_loop_t *chain_loop;
static void on_chain(stg_curluv_t *c, int err, long status, const char *body, size_t len) {
  result_t *r = c->data;
  on_done(c, err, status, body, len);
  if (--chain_left > 0)
    CHECK_EQ_INT(stg_curluv_start(chain_loop, c, &chain_opts), 0);
  (void)r;
}

TEST(restart_from_callback) {
  server_t s = {0};
  REQUIRE(llm_start(&s, "ok") == 0);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/api/chat", s.port);
  uv_loop_t loop;
  uv_loop_init(&loop);
  result_t r;
  memset(&r, 0, sizeof r);
  memset(&chain_opts, 0, sizeof chain_opts);
  chain_opts.url = url;
  chain_opts.body = ollama_body;
  chain_opts.body_len = strlen(ollama_body);
  chain_opts.cb = on_chain;
  chain_opts.data = &r;
  chain_loop = &loop;
  chain_left = 3;
  REQUIRE(stg_curluv_start(&loop, &r.c, &chain_opts) == 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  CHECK_EQ_INT(r.calls, 3);
  CHECK_EQ_INT(r.status, 200);
  server_stop(&s);
}

TEST(https_with_ca) {
  char root[PATH_MAX + 8];
  snprintf(root, sizeof root, "%s/root", tmp);
  mkdir(root, 0755);
  char file[PATH_MAX + 32];
  snprintf(file, sizeof file, "%s/reply.json", root);
  FILE *f = fopen(file, "w");
  REQUIRE(f != NULL);
  fputs("{\"message\":{\"content\":\"over tls\"}}", f);
  fclose(f);
  server_t s = {0};
  REQUIRE(tls_start(&s, root) == 0);
  char url[128], ca[PATH_MAX + 16], wrong[PATH_MAX + 16];
  snprintf(url, sizeof url, "https://localhost:%d/reply.json", s.port);
  snprintf(ca, sizeof ca, "%s/ca.crt", certs);
  snprintf(wrong, sizeof wrong, "%s/wronghost.crt", certs);
  stg_curluv_options_t o = {0};
  o.url = url;
  o.method = "GET";
  o.ca_file = ca;
  result_t r;
  CHECK_EQ_INT(run_one(&r, &o), 0);
  CHECK_EQ_INT(r.err, 0);
  CHECK_EQ_INT(r.status, 200);
  CHECK_STR(r.body, "{\"message\":{\"content\":\"over tls\"}}");
  /* A CA that did not sign the server's certificate. */
  o.ca_file = wrong;
  CHECK_EQ_INT(run_one(&r, &o), 0);
  CHECK_EQ_INT(r.err, UV_EPROTO);
  CHECK(r.errmsg[0] != '\0');
  server_stop(&s);
}

TEST(bad_options) {
  stg_curluv_options_t o = {0};
  result_t r;
  CHECK_EQ_INT(run_one(&r, &o), UV_EINVAL);
  o.url = "ftp://127.0.0.1/x";
  CHECK_EQ_INT(run_one(&r, &o), UV_EINVAL);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const char *h = getenv("STG_TEST_HELPER"), *src = getenv("STG_SOURCE_DIR");
  if (h == NULL || src == NULL) {
    fprintf(stderr, "STG_TEST_HELPER and STG_SOURCE_DIR must be set (run under ctest)\n");
    return 1;
  }
  snprintf(helper, sizeof helper, "%s", h);
  snprintf(tls_bin, sizeof tls_bin, "%s", h);
  char *slash = strrchr(tls_bin, '/');
  snprintf(slash + 1, sizeof tls_bin - (size_t)(slash + 1 - tls_bin), "stg-test-tls-server");
  snprintf(certs, sizeof certs, "%s/test/fixtures/certs", src);
  snprintf(tmp, sizeof tmp, "/tmp/stg-curluv-XXXXXX");
  if (mkdtemp(tmp) == NULL)
    return 1;
  RUN(post_json_with_bearer);
  RUN(status_is_not_an_error);
  RUN(connection_refused);
  RUN(timeout);
  RUN(body_cap);
  RUN(cancel);
  RUN(restart_from_callback);
  RUN(https_with_ca);
  RUN(bad_options);
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", tmp);
  return CHECK_DONE();
}
