/* Capture from real children, wired as the supervisor wires it (uv_spawn
 * with a stdout pipe, every read fed to the store, EOF ends the line):
 * a child writing 2 MB is never held back while the writer thread is stuck
 * on its file, and what could not be written is counted exactly; a final
 * line without a newline is kept. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "check.h"
#include "logread.h"
#include "logstore.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

static uv_loop_t loop;
static char root[64];
static char dir[128];
static int test_no;

typedef struct {
  uv_process_t proc;
  uv_pipe_t out;
  stg_logsrc_t *src;
  int pid;
  bool exited, eof;
  int closed;
  char buf[65536];
} child_t;

static void on_child_closed(uv_handle_t *h) { ((child_t *)h->data)->closed++; }

static void child_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  (void)size;
  child_t *c = h->data;
  *buf = uv_buf_init(c->buf, sizeof c->buf);
}

static void child_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  child_t *c = s->data;
  if (n < 0) {
    stg_logsrc_eof(c->src, c->pid, STG_LOGSTREAM_OUT);
    c->eof = true;
    uv_close((uv_handle_t *)s, on_child_closed);
    return;
  }
  stg_logsrc_feed(c->src, c->pid, STG_LOGSTREAM_OUT, buf->base, (size_t)n);
}

static void child_exit(uv_process_t *p, int64_t status, int sig) {
  (void)status;
  (void)sig;
  child_t *c = p->data;
  c->exited = true;
  uv_close((uv_handle_t *)p, on_child_closed);
}

static int child_start(child_t *c, stg_logsrc_t *src, char **args) {
  memset(c, 0, sizeof *c);
  c->src = src;
  uv_pipe_init(&loop, &c->out, 0);
  c->out.data = c->proc.data = c;
  uv_stdio_container_t stdio[3] = {
      {UV_IGNORE, {0}},
      {UV_CREATE_PIPE | UV_WRITABLE_PIPE, {.stream = (uv_stream_t *)&c->out}},
      {UV_INHERIT_FD, {.fd = 2}}};
  uv_process_options_t o;
  memset(&o, 0, sizeof o);
  o.file = args[0];
  o.args = args;
  o.stdio = stdio;
  o.stdio_count = 3;
  o.exit_cb = child_exit;
  int rc = uv_spawn(&loop, &c->proc, &o);
  if (rc != 0) {
    uv_close((uv_handle_t *)&c->proc, on_child_closed);
    uv_close((uv_handle_t *)&c->out, on_child_closed);
    return rc;
  }
  c->pid = c->proc.pid;
  return uv_read_start((uv_stream_t *)&c->out, child_alloc, child_read);
}

static bool run_until(bool (*cond)(void *), void *arg) {
  for (int i = 0; i < 30000; i++) {
    if (cond(arg))
      return true;
    uv_run(&loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
  return cond(arg);
}

/* Counts the out records delivered live. */
static int outs;
static int count_deliver(void *arg, const char *line, size_t len, bool must) {
  (void)arg;
  (void)must;
  (void)len;
  if (memmem(line, len, "\"stream\":\"out\"", 14) != NULL)
    outs++;
  return 0;
}

static bool all_captured(void *arg) { return outs == *(int *)arg; }
static bool child_gone(void *arg) { return ((child_t *)arg)->closed == 2; }

static void on_done(void *arg) { *(int *)arg = 1; }

/* Reads the FIFO's records: out lines must be "line N" in order. */
typedef struct {
  int rfd;
  char *buf;
  size_t len, cap;
  long next;       /* the least line number the next out line may have */
  long lines;
  long long dropped;
  int disorder;
} fifo_t;

static void fifo_drain(fifo_t *f) {
  for (;;) {
    if (f->len == f->cap) {
      f->cap = f->cap ? f->cap * 2 : 1 << 16;
      f->buf = realloc(f->buf, f->cap);
    }
    ssize_t r = read(f->rfd, f->buf + f->len, f->cap - f->len);
    if (r <= 0)
      break;
    f->len += (size_t)r;
  }
  char *nl;
  while ((nl = memchr(f->buf, '\n', f->len)) != NULL) {
    size_t ll = (size_t)(nl - f->buf);
    stg_logrec_t rec;
    char t[64];
    if (stg_logread_parse_line(f->buf, ll, &rec) == 0) {
      snprintf(t, sizeof t, "%.*s", (int)(rec.len < 60 ? rec.len : 60), rec.text);
      long k;
      long long n;
      if (rec.stream == STG_LOGSTREAM_OUT && sscanf(t, "line %ld", &k) == 1) {
        if (k < f->next)
          f->disorder++;
        f->next = k + 1;
        f->lines++;
      } else if (rec.stream == STG_LOGSTREAM_SYS && sscanf(t, "dropped %lld lines", &n) == 1) {
        f->dropped += n;
      }
    }
    memmove(f->buf, nl + 1, f->len - ll - 1);
    f->len -= ll + 1;
  }
}

TEST(child_never_blocked) {
  snprintf(dir, sizeof dir, "%s/t%d", root, ++test_no);
  REQUIRE(mkdir(dir, 0700) == 0);
  REQUIRE(uv_loop_init(&loop) == 0);
  /* server.log is a FIFO nobody reads: the writer thread is stuck once the
   * pipe (64 KiB) and the queue (64 KiB) are full. */
  char path[256];
  snprintf(path, sizeof path, "%s/server.log", dir);
  REQUIRE(mkfifo(path, 0600) == 0);
  fifo_t f = {0};
  f.rfd = open(path, O_RDONLY | O_NONBLOCK);
  REQUIRE(f.rfd >= 0);
  stg_logstore_options_t o = {dir, 0, 5, 64 << 10, 0};
  stg_logstore_t *s = NULL;
  REQUIRE(stg_logstore_init(&loop, &o, &s) == 0);
  stg_logsrc_t *src;
  REQUIRE(stg_logstore_source(s, "server", &src) == 0);
  stg_logsub_options_t so = {NULL, 0, 0, true, count_deliver, NULL};
  stg_logsub_t *sub;
  REQUIRE(stg_logstore_subscribe(s, &so, &sub) == 0);

  child_t c;
  int n = 20000;
  char *args[] = {getenv("STG_TEST_HELPER"), "lines", "20000", "100", NULL};
  REQUIRE(child_start(&c, src, args) == 0);
  /* The child writes all its 2 MB although nothing reaches the file. */
  CHECK(run_until(all_captured, &n));
  stg_logstore_stats_t st;
  stg_logstore_stats(s, &st);
  CHECK(st.queue_dropped > 0);
  uv_process_kill(&c.proc, SIGTERM);
  CHECK(run_until(child_gone, &c));

  stg_logsub_cancel(sub);
  int done = 0;
  stg_logstore_close(s, on_done, &done);
  while (!done) {
    fifo_drain(&f);
    uv_run(&loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
  fifo_drain(&f);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  /* Every line is either in the file, in order, or counted by a note. */
  CHECK_EQ_INT(f.lines + f.dropped, 20000);
  CHECK_EQ_INT(f.dropped, (long long)st.queue_dropped);
  CHECK_EQ_INT(f.disorder, 0);
  close(f.rfd);
  free(f.buf);
}

TEST(final_line_kept) {
  snprintf(dir, sizeof dir, "%s/t%d", root, ++test_no);
  REQUIRE(uv_loop_init(&loop) == 0);
  stg_logstore_options_t o = {dir, 0, 5, 0, 0};
  stg_logstore_t *s = NULL;
  REQUIRE(stg_logstore_init(&loop, &o, &s) == 0);
  stg_logsrc_t *src;
  REQUIRE(stg_logstore_source(s, "agent-runner", &src) == 0);
  child_t c;
  char *args[] = {getenv("STG_TEST_HELPER"), "partial-line", "no newline at exit", NULL};
  REQUIRE(child_start(&c, src, args) == 0);
  CHECK(run_until(child_gone, &c));
  stg_logsrc_note(src, "exited 0");
  int done = 0;
  stg_logstore_close(s, on_done, &done);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(done, 1);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  stg_logread_options_t ro = {dir, "agent-runner", -1, 0, 0};
  stg_logread_list_t l;
  REQUIRE(stg_logread_component(&ro, &l) == 0);
  CHECK_EQ_INT(l.n, 2);
  if (l.n == 2) {
    CHECK(l.v[0].len == 18 && memcmp(l.v[0].text, "no newline at exit", 18) == 0);
    CHECK_EQ_INT(l.v[0].pid, c.pid);
    CHECK_EQ_INT(l.v[0].stream, STG_LOGSTREAM_OUT);
    CHECK_EQ_INT(l.v[1].stream, STG_LOGSTREAM_SYS);
  }
  stg_logread_list_free(&l);
}

int main(void) {
  if (getenv("STG_TEST_HELPER") == NULL) {
    fprintf(stderr, "STG_TEST_HELPER must name the test helper binary\n");
    return 1;
  }
  snprintf(root, sizeof root, "/tmp/stg-logcap.XXXXXX");
  if (mkdtemp(root) == NULL)
    return 1;
  RUN(child_never_blocked);
  RUN(final_line_kept);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", root);
  if (system(cmd) != 0)
    return 1;
  return CHECK_DONE();
}
