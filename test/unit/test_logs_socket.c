/* The `logs` request end to end: this test serves run/supervisor.sock with
 * the real logstore, wired the way the supervisor wires it (a deliver
 * callback that writes to the connection and refuses past a write-queue
 * cap, and resumes the subscription from the write callback below half of
 * it), and runs the real CLI against it: the tail merged, then -f
 * following live lines until the connection closes; then a flood far past
 * the write-queue cap, followed without a line lost or repeated. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "check.h"
#include "logstore.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#define WQ_CAP (256u << 10)

static uv_loop_t loop;
static char home[64];
static stg_logstore_t *store;
static uv_pipe_t server;

/* --- the control socket's side ------------------------------------------------ */

typedef struct {
  uv_pipe_t pipe;
  char buf[4096];
  size_t len;
  stg_logsub_t *sub;
  bool closing;
} conn_t;

static conn_t *current; /* the latest connection */
static long refusals;    /* records a connection refused (queue full) */

typedef struct {
  uv_write_t req;
  char data[];
} wreq_t;

static void on_conn_closed(uv_handle_t *h) {
  conn_t *c = container_of((uv_pipe_t *)h, conn_t, pipe);
  if (current == c)
    current = NULL;
  free(c);
}

static void conn_close(conn_t *c) {
  if (c->closing)
    return;
  c->closing = true;
  stg_logsub_cancel(c->sub);
  c->sub = NULL;
  uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
}

static void on_write(uv_write_t *req, int status) {
  conn_t *c = container_of((uv_pipe_t *)req->handle, conn_t, pipe);
  free(container_of(req, wreq_t, req));
  if (status == 0 && !c->closing && c->sub &&
      uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe) <= WQ_CAP / 2)
    stg_logsub_resume(c->sub);
}

static int conn_deliver(void *arg, const char *line, size_t len, bool must) {
  conn_t *c = arg;
  if (c->closing)
    return 0;
  if (!must && uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe) > WQ_CAP) {
    refusals++;
    return UV_ENOBUFS;
  }
  wreq_t *w = malloc(sizeof *w + len);
  if (w == NULL)
    return UV_ENOBUFS;
  memcpy(w->data, line, len);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_write) != 0)
    free(w);
  return 0;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  conn_t *c = req->data;
  free(req);
  conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  conn_t *c = container_of((uv_pipe_t *)h, conn_t, pipe);
  (void)size;
  *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - c->len));
}

static void on_request(conn_t *c, const char *line, size_t len) {
  json_t *req = json_loadb(line, len, 0, NULL);
  CHECK(req != NULL);
  CHECK_STR(json_string_value(json_object_get(req, "cmd")), "logs");
  const char *names[8];
  size_t n = 0;
  json_t *comps = json_object_get(req, "components");
  for (size_t i = 0; i < json_array_size(comps) && n < 8; i++)
    names[n++] = json_string_value(json_array_get(comps, i));
  json_t *tail = json_object_get(req, "tail");
  stg_logsub_options_t o = {names, n, tail ? (uint64_t)json_integer_value(tail) : 100,
                            json_is_true(json_object_get(req, "follow")), conn_deliver, c};
  int rc = stg_logstore_subscribe(store, &o, &c->sub);
  CHECK_EQ_INT(rc, 0);
  if (!o.follow) {
    stg_logsub_cancel(c->sub);
    c->sub = NULL;
    uv_shutdown_t *sr = malloc(sizeof *sr);
    sr->data = c;
    if (uv_shutdown(sr, (uv_stream_t *)&c->pipe, on_shutdown) != 0) {
      free(sr);
      conn_close(c);
    }
  }
  json_decref(req);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn_t *c = container_of((uv_pipe_t *)s, conn_t, pipe);
  (void)buf;
  if (n < 0) {
    conn_close(c);
    return;
  }
  c->len += (size_t)n;
  char *nl = memchr(c->buf, '\n', c->len);
  if (nl != NULL) {
    uv_read_stop(s);
    on_request(c, c->buf, (size_t)(nl - c->buf));
  } else if (c->len == sizeof c->buf) {
    conn_close(c);
  }
}

static void on_connection(uv_stream_t *srv, int status) {
  CHECK_EQ_INT(status, 0);
  conn_t *c = calloc(1, sizeof *c);
  uv_pipe_init(&loop, &c->pipe, 0);
  if (uv_accept(srv, (uv_stream_t *)&c->pipe) != 0) {
    conn_close(c);
    return;
  }
  current = c;
  uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

/* --- the CLI's side ----------------------------------------------------------------- */

typedef struct {
  uv_process_t proc;
  uv_pipe_t out, err;
  char obuf[65536], ebuf[4096];
  size_t olen, elen;
  int open_pipes;
  bool exited;
  int64_t status;
  int closed;
} cli_t;

static void cli_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  (void)size;
  cli_t *p = h->data;
  if ((uv_pipe_t *)h == &p->out)
    *buf = uv_buf_init(p->obuf + p->olen, (unsigned)(sizeof p->obuf - 1 - p->olen));
  else
    *buf = uv_buf_init(p->ebuf + p->elen, (unsigned)(sizeof p->ebuf - 1 - p->elen));
}

static void on_cli_closed(uv_handle_t *h) { ((cli_t *)h->data)->closed++; }

static void cli_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  cli_t *p = s->data;
  if (n < 0) {
    uv_close((uv_handle_t *)s, on_cli_closed);
    p->open_pipes--;
    return;
  }
  if ((uv_pipe_t *)s == &p->out)
    p->obuf[p->olen += (size_t)n] = '\0';
  else
    p->ebuf[p->elen += (size_t)n] = '\0';
}

static void on_exit_cb(uv_process_t *proc, int64_t status, int sig) {
  cli_t *p = proc->data;
  p->exited = true;
  p->status = sig ? 128 + sig : status;
  uv_close((uv_handle_t *)proc, on_cli_closed);
}

/* out_fd >= 0: the CLI's stdout goes there instead of p->obuf. */
static int cli_start_to(cli_t *p, const char *const *args, int out_fd) {
  memset(p, 0, sizeof *p);
  const char *bin = getenv("STIGMER_BIN");
  char *argv[16];
  int k = 0;
  argv[k++] = (char *)bin;
  argv[k++] = "daemon";
  argv[k++] = "logs";
  for (int i = 0; args[i] && k < 15; i++)
    argv[k++] = (char *)args[i];
  argv[k] = NULL;
  uv_pipe_init(&loop, &p->out, 0);
  uv_pipe_init(&loop, &p->err, 0);
  p->out.data = p->err.data = p->proc.data = p;
  uv_stdio_container_t stdio[3] = {
      {UV_IGNORE, {0}},
      {UV_CREATE_PIPE | UV_WRITABLE_PIPE, {.stream = (uv_stream_t *)&p->out}},
      {UV_CREATE_PIPE | UV_WRITABLE_PIPE, {.stream = (uv_stream_t *)&p->err}}};
  if (out_fd >= 0) {
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = out_fd;
  }
  uv_process_options_t o;
  memset(&o, 0, sizeof o);
  o.file = bin;
  o.args = argv;
  o.stdio = stdio;
  o.stdio_count = 3;
  o.exit_cb = on_exit_cb;
  int rc = uv_spawn(&loop, &p->proc, &o);
  if (rc != 0) {
    uv_close((uv_handle_t *)&p->proc, on_cli_closed);
    uv_close((uv_handle_t *)&p->out, on_cli_closed);
    uv_close((uv_handle_t *)&p->err, on_cli_closed);
    return rc;
  }
  p->open_pipes = 2;
  if (out_fd >= 0) /* never opened: closed now, counted as done */
    uv_close((uv_handle_t *)&p->out, on_cli_closed);
  else
    uv_read_start((uv_stream_t *)&p->out, cli_alloc, cli_read);
  uv_read_start((uv_stream_t *)&p->err, cli_alloc, cli_read);
  return 0;
}

static int cli_start(cli_t *p, const char *const *args) { return cli_start_to(p, args, -1); }

/* Runs the loop until cond or about 20 s. */
static bool run_until(bool (*cond)(void *), void *arg) {
  for (int i = 0; i < 20000; i++) {
    if (cond(arg))
      return true;
    uv_run(&loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
  return cond(arg);
}

static bool cli_done(void *arg) {
  cli_t *p = arg;
  return p->closed == 3;
}
static bool subscribed(void *arg) {
  (void)arg;
  return current != NULL && current->sub != NULL;
}
static bool saw_live2(void *arg) { return strstr(((cli_t *)arg)->obuf, "live2") != NULL; }

static void on_store_closed(void *arg) { *(int *)arg = 1; }

#define FLOOD 50000L /* lines; their records fit the default ring (8 MiB) */
static const char *flood_path;
static bool flood_done(void *arg) {
  (void)arg;
  struct stat st; /* each line is "server | fl NNNNNNN\n" */
  return stat(flood_path, &st) == 0 && st.st_size >= FLOOD * 20;
}

TEST(tail_and_follow) {
  char dir[128], sock[160];
  snprintf(dir, sizeof dir, "%s/run", home);
  REQUIRE(mkdir(dir, 0700) == 0);
  snprintf(sock, sizeof sock, "%s/run/supervisor.sock", home);
  REQUIRE(uv_loop_init(&loop) == 0);
  snprintf(dir, sizeof dir, "%s/logs", home);
  stg_logstore_options_t so = {dir, 0, 5, 0, 0};
  REQUIRE(stg_logstore_init(&loop, &so, &store) == 0);
  REQUIRE(uv_pipe_init(&loop, &server, 0) == 0);
  REQUIRE(uv_pipe_bind(&server, sock) == 0);
  REQUIRE(uv_listen((uv_stream_t *)&server, 8, on_connection) == 0);

  stg_logsrc_t *srv, *wrk;
  REQUIRE(stg_logstore_source(store, "server", &srv) == 0);
  REQUIRE(stg_logstore_source(store, "workflow-runner", &wrk) == 0);
  stg_logsrc_feed(srv, 100, STG_LOGSTREAM_OUT, "s1\n", 3);
  stg_logsrc_feed(wrk, 101, STG_LOGSTREAM_OUT, "w1\n", 3);
  stg_logsrc_feed(srv, 100, STG_LOGSTREAM_ERR, "s2 \xff\n", 5);
  stg_logsrc_note(srv, "restarting in %dms", 250);

  /* The tail: the last 2 of each component, merged, then the end. */
  cli_t p;
  REQUIRE(cli_start(&p, (const char *[]){"-n", "2", NULL}) == 0);
  CHECK(run_until(cli_done, &p));
  CHECK_EQ_INT(p.status, 0);
  CHECK_STR(p.obuf, "workflow-runner | w1\n"
                    "server          | s2 \xef\xbf\xbd\n"
                    "server          | restarting in 250ms\n");
  if (p.elen)
    fprintf(stderr, "cli stderr: %s", p.ebuf);

  /* Follow one component until the connection closes. */
  REQUIRE(cli_start(&p, (const char *[]){"-f", "-n", "1", "server", NULL}) == 0);
  CHECK(run_until(subscribed, NULL));
  stg_logsrc_feed(srv, 102, STG_LOGSTREAM_OUT, "live1\n", 6);
  stg_logsrc_feed(wrk, 101, STG_LOGSTREAM_OUT, "not this one\n", 13);
  stg_logsrc_feed(srv, 102, STG_LOGSTREAM_OUT, "live2\n", 6);
  CHECK(run_until(saw_live2, &p));
  if (current)
    conn_close(current);
  CHECK(run_until(cli_done, &p));
  CHECK_EQ_INT(p.status, 0);
  CHECK_STR(p.obuf, "server | restarting in 250ms\nserver | live1\nserver | live2\n");
  CHECK_CONTAINS(p.ebuf, "closed the connection");

  /* A flood: far more than the connection's queue takes at once, fed
   * without running the loop. The follower falls behind and is caught up
   * from the ring as the CLI reads: every line once, in order. */
  char out_path[160];
  snprintf(out_path, sizeof out_path, "%s/flood.out", home);
  flood_path = out_path;
  int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(cli_start_to(&p, (const char *[]){"-f", "-n", "0", "server", NULL}, fd) == 0);
  close(fd);
  CHECK(run_until(subscribed, NULL));
  refusals = 0;
  char chunk[1000 * 12];
  for (long i = 0; i < FLOOD; i += 1000) {
    size_t len = 0;
    for (long k = i; k < i + 1000; k++)
      len += (size_t)snprintf(chunk + len, sizeof chunk - len, "fl %07ld\n", k);
    stg_logsrc_feed(srv, 103, STG_LOGSTREAM_OUT, chunk, len);
  }
  CHECK(refusals > 0); /* it did fall behind */
  CHECK(run_until(flood_done, NULL));
  if (current)
    conn_close(current);
  CHECK(run_until(cli_done, &p));
  CHECK_EQ_INT(p.status, 0);
  CHECK(strstr(p.ebuf, "not shown") == NULL);
  FILE *f = fopen(out_path, "r");
  REQUIRE(f != NULL);
  char line[64];
  long n = 0, bad = 0;
  while (fgets(line, sizeof line, f)) {
    char want[64];
    snprintf(want, sizeof want, "server | fl %07ld\n", n++);
    if (strcmp(line, want) != 0 && bad++ == 0)
      CHECK_STR(line, want);
  }
  fclose(f);
  CHECK_EQ_INT(n, FLOOD);
  CHECK_EQ_INT(bad, 0);

  uv_close((uv_handle_t *)&server, NULL);
  int done = 0;
  stg_logstore_close(store, on_store_closed, &done);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(done, 1);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

int main(void) {
  if (getenv("STIGMER_BIN") == NULL) {
    fprintf(stderr, "STIGMER_BIN must name the built binary\n");
    return 1;
  }
  snprintf(home, sizeof home, "/tmp/stg-logsock.XXXXXX");
  if (mkdtemp(home) == NULL)
    return 1;
  setenv("STIGMER_HOME", home, 1);
  unsetenv("NO_COLOR");
  char cmd[512];
  RUN(tail_and_follow);
  snprintf(cmd, sizeof cmd, "rm -rf %s", home);
  if (system(cmd) != 0)
    return 1;
  return CHECK_DONE();
}
