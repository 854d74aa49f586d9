/* Log capture: line splitting, timestamps, rotation, drop counting (a full
 * queue, a full disk), subscribers with gaps, the tail merge, reopen. Each
 * test ends with the loop closing cleanly. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "check.h"
#include "logread.h"
#include "logstore.h"

static char root[64];
static char dir[128];
static uv_loop_t loop;
static int test_no;

static void on_done(void *arg) { *(int *)arg += 1; }

/* A fresh loop and logs directory for a test. */
static void setup(void) {
  snprintf(dir, sizeof dir, "%s/t%d", root, ++test_no);
  uv_loop_init(&loop);
}

static stg_logstore_t *open_store(uint64_t max_size, unsigned keep, size_t queue_cap,
                                  size_t ring_cap) {
  stg_logstore_options_t o = {dir, max_size, keep, queue_cap, ring_cap};
  stg_logstore_t *s = NULL;
  int rc = stg_logstore_init(&loop, &o, &s);
  if (rc != 0)
    fprintf(stderr, "stg_logstore_init: %s\n", uv_strerror(rc));
  return s;
}

/* Closes the store and runs the loop until it and the loop are done. */
static void finish(stg_logstore_t *s) {
  int done = 0;
  if (s) {
    stg_logstore_close(s, on_done, &done);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(done, 1);
  }
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

static stg_logsrc_t *source(stg_logstore_t *s, const char *name) {
  stg_logsrc_t *src = NULL;
  CHECK_EQ_INT(stg_logstore_source(s, name, &src), 0);
  return src;
}

static void feed_str(stg_logsrc_t *src, int pid, const char *text) {
  stg_logsrc_feed(src, pid, STG_LOGSTREAM_OUT, text, strlen(text));
}

static int read_back(const char *component, stg_logread_list_t *l) {
  stg_logread_options_t o = {dir, component, -1, 0, 0};
  return stg_logread_component(&o, l);
}

/* A subscriber that keeps what it gets as parsed JSON. */
typedef struct {
  json_t *items;
  bool refuse;
  int refused;
  bool limited; /* refuse (unless must) when room is 0 */
  long room;    /* objects it takes, when limited */
  int cancel_after; /* cancel itself after this many (0: never) */
  stg_logsub_t *self;
  int bad_lines;
} cap_t;

static int cap_deliver(void *arg, const char *line, size_t len, bool must) {
  cap_t *c = arg;
  if (len == 0 || line[len - 1] != '\n' || memchr(line, '\n', len - 1) != NULL)
    c->bad_lines++;
  if (!must && (c->refuse || (c->limited && c->room <= 0))) {
    c->refused++;
    return UV_ENOBUFS;
  }
  if (c->limited)
    c->room--;
  json_error_t e;
  json_t *j = json_loadb(line, len, 0, &e);
  if (j == NULL) {
    c->bad_lines++;
    return 0;
  }
  json_array_append_new(c->items, j);
  if (c->cancel_after && (int)json_array_size(c->items) == c->cancel_after)
    stg_logsub_cancel(c->self);
  return 0;
}

static void cap_init(cap_t *c) {
  memset(c, 0, sizeof *c);
  c->items = json_array();
}

static stg_logsub_t *subscribe(stg_logstore_t *s, cap_t *c, const char *const *names,
                               size_t n, uint64_t tail, bool follow) {
  stg_logsub_options_t o = {names, n, tail, follow, cap_deliver, c};
  stg_logsub_t *sub = NULL;
  CHECK_EQ_INT(stg_logstore_subscribe(s, &o, &sub), 0);
  c->self = sub;
  return sub;
}

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }
static long long jint(json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

static char *repeat(char ch, size_t n) {
  char *p = malloc(n + 2);
  memset(p, ch, n);
  p[n] = '\0';
  return p;
}

/* Runs the loop until cond() or about 20 s. */
static int wait_until(int (*cond)(void *), void *arg) {
  for (int i = 0; i < 20000; i++) {
    uv_run(&loop, UV_RUN_NOWAIT);
    if (cond(arg))
      return 1;
    usleep(1000);
  }
  return 0;
}

TEST(split_lines) {
  setup();
  stg_logstore_t *s = open_store(0, 5, 0, 0);
  REQUIRE(s != NULL);
  stg_logsrc_t *src = source(s, "server");
  cap_t c;
  cap_init(&c);
  stg_logsub_t *sub = subscribe(s, &c, NULL, 0, 0, true);
  const size_t M = STG_LOG_MAX_LINE;
  char *a = repeat('a', M), *b = repeat('b', M + 1), *cc = repeat('c', 2 * M),
       *d = repeat('d', M);
  /* 1: exactly 16 KiB, its newline in the next read: not split. */
  stg_logsrc_feed(src, 1, STG_LOGSTREAM_OUT, a, M);
  feed_str(src, 1, "\n");
  /* 2, 3: one byte over, fed in 1000-byte reads. */
  b[M + 1] = '\n';
  for (size_t i = 0; i < M + 2; i += 1000)
    stg_logsrc_feed(src, 1, STG_LOGSTREAM_OUT, b + i, M + 2 - i < 1000 ? M + 2 - i : 1000);
  /* 4, 5: exactly two pieces. */
  cc[2 * M] = '\n';
  stg_logsrc_feed(src, 1, STG_LOGSTREAM_OUT, cc, 2 * M + 1);
  /* 6: a final line without a newline, kept at EOF. */
  feed_str(src, 1, "tail");
  stg_logsrc_eof(src, 1, STG_LOGSTREAM_OUT);
  /* 7: 16 KiB without a newline, then EOF: one line, not continued. */
  stg_logsrc_feed(src, 1, STG_LOGSTREAM_OUT, d, M);
  stg_logsrc_eof(src, 1, STG_LOGSTREAM_OUT);
  /* 8, 9, 10: a partial line of pid 1 ends when pid 2 writes. */
  feed_str(src, 1, "x\ny");
  feed_str(src, 2, "z\n");
  /* 11, 12: stderr, an empty line. */
  stg_logsrc_feed(src, 2, STG_LOGSTREAM_ERR, "e1\n\n", 4);
  /* 13: a partial line at close is kept too. */
  feed_str(src, 2, "at close");

  struct {
    const char *stream;
    char ch;
    size_t len;
    int pid;
  } want[] = {{"out", 'a', M, 1},  {"out+", 'b', M, 1}, {"out", 'b', 1, 1},
              {"out+", 'c', M, 1}, {"out", 'c', M, 1},  {"out", 't', 4, 1},
              {"out", 'd', M, 1},  {"out", 'x', 1, 1},  {"out", 'y', 1, 1},
              {"out", 'z', 1, 2},  {"err", 'e', 2, 2},  {"err", 0, 0, 2}};
  size_t nw = sizeof want / sizeof want[0];
  CHECK_EQ_INT(json_array_size(c.items), nw);
  CHECK_EQ_INT(c.bad_lines, 0);
  for (size_t i = 0; i < nw && i < json_array_size(c.items); i++) {
    json_t *j = json_array_get(c.items, i);
    CHECK_STR(jstr(j, "stream"), want[i].stream);
    CHECK_EQ_INT(strlen(jstr(j, "line")), want[i].len);
    if (want[i].len)
      CHECK_EQ_INT(jstr(j, "line")[0], want[i].ch);
    CHECK_EQ_INT(jint(j, "pid"), want[i].pid);
    CHECK_EQ_INT(jint(j, "seq"), (long long)i + 1);
    CHECK_STR(jstr(j, "component"), "server");
  }
  stg_logsub_cancel(sub);
  finish(s);

  /* The file says the same, and has the line kept at close. */
  stg_logread_list_t l;
  REQUIRE(read_back("server", &l) == 0);
  CHECK_EQ_INT(l.n, nw + 1);
  for (size_t i = 0; i < nw && i < l.n; i++) {
    CHECK_STR(stg_log_stream_name(l.v[i].stream, l.v[i].cont), want[i].stream);
    CHECK_EQ_INT(l.v[i].len, want[i].len);
    CHECK_EQ_INT(l.v[i].pid, want[i].pid);
  }
  if (l.n == nw + 1)
    CHECK(l.v[nw].len == 8 && memcmp(l.v[nw].text, "at close", 8) == 0);
  stg_logread_list_free(&l);
  json_decref(c.items);
  free(a);
  free(b);
  free(cc);
  free(d);
}

TEST(timestamps_monotonic) {
  setup();
  stg_logstore_t *s = open_store(0, 5, 0, 0);
  REQUIRE(s != NULL);
  stg_logsrc_t *x = source(s, "x"), *y = source(s, "y");
  cap_t c;
  cap_init(&c);
  stg_logsub_t *sub = subscribe(s, &c, NULL, 0, 0, true);
  char buf[64 * 12];
  for (int k = 0; k < 50; k++) {
    size_t n = 0;
    for (int i = 0; i < 12; i++)
      n += (size_t)snprintf(buf + n, sizeof buf - n, "l%d\n", k * 12 + i);
    stg_logsrc_feed(x, 1, STG_LOGSTREAM_OUT, buf, n);
    stg_logsrc_feed(y, 2, STG_LOGSTREAM_ERR, buf, n);
    stg_logsrc_note(y, "note %d", k);
  }
  CHECK_EQ_INT(json_array_size(c.items), 50 * 25);
  long long last_us = 0, seq_x = 0, seq_y = 0;
  int bad_us = 0, bad_seq = 0;
  for (size_t i = 0; i < json_array_size(c.items); i++) {
    json_t *j = json_array_get(c.items, i);
    long long us = jint(j, "us");
    if (us <= last_us)
      bad_us++;
    last_us = us;
    char ts[STG_LOG_TS_LEN];
    if (strcmp(jstr(j, "ts"), stg_log_format_ts((uint64_t)us, ts)) != 0)
      bad_us++;
    long long *seq = strcmp(jstr(j, "component"), "x") == 0 ? &seq_x : &seq_y;
    if (jint(j, "seq") != ++*seq)
      bad_seq++;
  }
  CHECK_EQ_INT(bad_us, 0);
  CHECK_EQ_INT(bad_seq, 0);
  CHECK_EQ_INT(seq_x, 600);
  CHECK_EQ_INT(seq_y, 650);
  stg_logsub_cancel(sub);
  finish(s);
  /* In the file too, and the times are now-ish. */
  stg_logread_list_t l;
  REQUIRE(read_back("y", &l) == 0);
  CHECK_EQ_INT(l.n, 650);
  uint64_t now = stg_log_now_us();
  int bad = 0;
  for (size_t i = 1; i < l.n; i++)
    if (l.v[i].us <= l.v[i - 1].us)
      bad++;
  CHECK_EQ_INT(bad, 0);
  if (l.n)
    CHECK(l.v[0].us > now - 600000000ull && l.v[l.n - 1].us <= now + 1000000);
  stg_logread_list_free(&l);
  json_decref(c.items);
}

/* Counts every "line NNNNN" record; checks order and uniqueness. */
static void check_sequence(stg_logread_list_t *l, int first, int last) {
  int bad = 0;
  CHECK_EQ_INT(l->n, last - first + 1);
  for (size_t i = 0; i < l->n; i++) {
    char t[64];
    int k = -1;
    snprintf(t, sizeof t, "%.*s", (int)l->v[i].len, l->v[i].text);
    if (sscanf(t, "line %d", &k) != 1 || k != first + (int)i) {
      if (bad++ < 5)
        fprintf(stderr, "record %zu: '%s', expected line %d\n", i, t, first + (int)i);
    }
  }
  CHECK_EQ_INT(bad, 0);
}

static int count_files(const char *component, unsigned *max_size_seen) {
  int n = 0;
  for (int i = 0; i < 2000; i++) {
    char p[256];
    struct stat st;
    if (i)
      snprintf(p, sizeof p, "%s/%s.log.%d", dir, component, i);
    else
      snprintf(p, sizeof p, "%s/%s.log", dir, component);
    if (stat(p, &st) != 0)
      break;
    if ((unsigned)st.st_size > *max_size_seen)
      *max_size_seen = (unsigned)st.st_size;
    n++;
  }
  return n;
}

TEST(rotation) {
  setup();
  /* No rotation at first; then 4 KiB files, keep all of them. */
  stg_logstore_t *s = open_store(0, 1000, 0, 0);
  REQUIRE(s != NULL);
  stg_logsrc_t *src = source(s, "server");
  char line[128];
  for (int i = 1; i <= 3000; i++) {
    int n = snprintf(line, sizeof line, "line %05d %s\n", i, i % 7 ? "short" : "a longer line here");
    stg_logsrc_feed(src, 10, STG_LOGSTREAM_OUT, line, (size_t)n);
    if (i == 100)
      stg_logstore_reconfigure(s, 4096, 1000);
  }
  finish(s);
  unsigned biggest = 0;
  int files = count_files("server", &biggest);
  CHECK(files > 30);
  CHECK(biggest <= 100 * 80); /* the first file grew before the reconfigure */
  stg_logread_list_t l;
  REQUIRE(read_back("server", &l) == 0);
  check_sequence(&l, 1, 3000);
  stg_logread_list_free(&l);
  /* Every file but the oldest fits the size. */
  for (int i = 1; i < files - 1; i++) {
    char p[256];
    struct stat st;
    snprintf(p, sizeof p, "%s/server.log.%d", dir, i);
    if (stat(p, &st) == 0)
      CHECK(st.st_size <= 4096 && st.st_size > 4096 - 200);
  }

  /* keep 3: only .1 .. .3 remain, holding the newest lines in order. */
  setup();
  s = open_store(4096, 3, 0, 0);
  REQUIRE(s != NULL);
  src = source(s, "w");
  for (int i = 1; i <= 2000; i++) {
    int n = snprintf(line, sizeof line, "line %05d\n", i);
    stg_logsrc_feed(src, 10, STG_LOGSTREAM_OUT, line, (size_t)n);
  }
  finish(s);
  biggest = 0;
  CHECK_EQ_INT(count_files("w", &biggest), 4);
  CHECK(biggest <= 4096);
  REQUIRE(read_back("w", &l) == 0);
  CHECK(l.n > 100 && l.n < 400);
  if (l.n > 0) {
    int first = 0;
    char t[64];
    snprintf(t, sizeof t, "%.*s", (int)l.v[0].len, l.v[0].text);
    sscanf(t, "line %d", &first);
    check_sequence(&l, first, 2000);
  }
  stg_logread_list_free(&l);
}

typedef struct {
  int rfd;
  char *buf;
  size_t len, cap;
  int lines;          /* "out" records seen */
  long long dropped;  /* sum of "dropped N lines" */
  int notes;
} fifo_t;

static void fifo_drain(fifo_t *f) {
  for (;;) {
    if (f->len == f->cap) {
      f->cap = f->cap ? f->cap * 2 : 65536;
      f->buf = realloc(f->buf, f->cap);
    }
    ssize_t r = read(f->rfd, f->buf + f->len, f->cap - f->len);
    if (r <= 0)
      break;
    f->len += (size_t)r;
  }
  char *nl;
  while ((nl = memchr(f->buf, '\n', f->len)) != NULL) {
    stg_logrec_t rec;
    char t[64];
    size_t ll = (size_t)(nl - f->buf);
    if (stg_logread_parse_line(f->buf, ll, &rec) == 0) {
      long long n;
      if (rec.stream == STG_LOGSTREAM_OUT)
        f->lines++;
      else if (rec.len > 8 && rec.len < 64 &&
               sscanf((snprintf(t, sizeof t, "%.*s", (int)rec.len, rec.text), t),
                      "dropped %lld lines", &n) == 1) {
        f->dropped += n;
        f->notes++;
      }
    }
    memmove(f->buf, nl + 1, f->len - ll - 1);
    f->len -= ll + 1;
  }
}

static int fifo_all_accounted(void *arg) {
  fifo_t *f = arg;
  fifo_drain(f);
  return f->lines + f->dropped == 3000;
}

TEST(queue_drops) {
  setup();
  REQUIRE(mkdir(dir, 0700) == 0);
  /* The file is a FIFO nobody reads yet: the writer blocks on it once the
   * pipe is full, so the queue fills and records are dropped. */
  char path[256];
  snprintf(path, sizeof path, "%s/server.log", dir);
  REQUIRE(mkfifo(path, 0600) == 0);
  fifo_t f = {0};
  f.rfd = open(path, O_RDONLY | O_NONBLOCK);
  REQUIRE(f.rfd >= 0);
  stg_logstore_t *s = open_store(0, 5, 1024, 0);
  REQUIRE(s != NULL);
  stg_logsrc_t *src = source(s, "server");
  cap_t c;
  cap_init(&c);
  stg_logsub_t *sub = subscribe(s, &c, NULL, 0, 0, true);
  char *big = malloc(3000 * 101);
  size_t n = 0;
  for (int i = 0; i < 3000; i++) {
    memset(big + n, 'x', 100);
    big[n + 100] = '\n';
    n += 101;
  }
  stg_logsrc_feed(src, 7, STG_LOGSTREAM_OUT, big, n);
  free(big);
  stg_logstore_stats_t st;
  stg_logstore_stats(s, &st);
  CHECK(st.queue_dropped > 0);
  /* Subscribers are not affected by the file's queue: they get every
   * line (and the notes made when there was room for a moment). */
  int outs = 0;
  for (size_t i = 0; i < json_array_size(c.items); i++)
    outs += strcmp(jstr(json_array_get(c.items, i), "stream"), "out") == 0;
  CHECK_EQ_INT(outs, 3000);
  /* Reading the FIFO makes room; a note accounts for every dropped line. */
  CHECK(wait_until(fifo_all_accounted, &f));
  stg_logstore_stats(s, &st);
  CHECK_EQ_INT(f.dropped, (long long)st.queue_dropped);
  CHECK(f.notes >= 1);
  CHECK(f.lines < 3000);
  /* The note is a sys record for subscribers too. */
  json_t *last = json_array_get(c.items, json_array_size(c.items) - 1);
  CHECK_STR(jstr(last, "stream"), "sys");
  CHECK_CONTAINS(jstr(last, "line"), "dropped ");
  stg_logsub_cancel(sub);
  int done = 0;
  stg_logstore_close(s, on_done, &done);
  while (!done) {
    uv_run(&loop, UV_RUN_NOWAIT);
    fifo_drain(&f);
    usleep(1000);
  }
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  close(f.rfd);
  free(f.buf);
  json_decref(c.items);
}

static int disk_dropped_10(void *arg) {
  stg_logstore_stats_t st;
  stg_logstore_stats(arg, &st);
  return st.disk_dropped == 10;
}

TEST(disk_full) {
  setup();
  if (access("/dev/full", W_OK) != 0) {
    fprintf(stderr, "skipped: no /dev/full\n");
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
    return;
  }
  REQUIRE(mkdir(dir, 0700) == 0);
  char path[256];
  snprintf(path, sizeof path, "%s/server.log", dir);
  REQUIRE(symlink("/dev/full", path) == 0);
  stg_logstore_t *s = open_store(0, 5, 0, 0);
  REQUIRE(s != NULL);
  stg_logsrc_t *src = source(s, "server");
  for (int i = 0; i < 10; i++)
    feed_str(src, 3, "lost\n");
  CHECK(wait_until(disk_dropped_10, s));
  /* The disk is back: the next record is preceded by the count. */
  REQUIRE(unlink(path) == 0);
  stg_logstore_reopen(s);
  feed_str(src, 3, "after\n");
  finish(s);
  stg_logread_list_t l;
  REQUIRE(read_back("server", &l) == 0);
  CHECK_EQ_INT(l.n, 2);
  if (l.n == 2) {
    CHECK_EQ_INT(l.v[0].stream, STG_LOGSTREAM_SYS);
    CHECK(l.v[0].len == 16 && memcmp(l.v[0].text, "dropped 10 lines", 16) == 0);
    CHECK(l.v[1].len == 5 && memcmp(l.v[1].text, "after", 5) == 0);
    CHECK_EQ_INT(l.v[1].pid, 3);
  }
  stg_logread_list_free(&l);
}

TEST(subscriber_gaps) {
  setup();
  stg_logstore_t *s = open_store(0, 5, 0, 0);
  REQUIRE(s != NULL);
  stg_logsrc_t *srv = source(s, "server"), *wrk = source(s, "worker");
  cap_t a, b, c, e;
  cap_init(&a);
  cap_init(&b);
  cap_init(&c);
  cap_init(&e);
  const char *only_server[] = {"server"};
  stg_logsub_t *sa = subscribe(s, &a, only_server, 1, 0, true);
  stg_logsub_t *sb = subscribe(s, &b, NULL, 0, 0, true);
  stg_logsub_t *sc = subscribe(s, &c, NULL, 0, 0, true);
  e.cancel_after = 2;
  subscribe(s, &e, NULL, 0, 0, true); /* cancels itself in its callback */
  for (int i = 0; i < 3; i++)
    feed_str(srv, 5, "before\n");
  a.refuse = c.refuse = true;
  for (int i = 0; i < 5; i++)
    feed_str(srv, 5, "refused\n");
  feed_str(wrk, 6, "w1\nw2\n");
  a.refuse = c.refuse = false;
  feed_str(srv, 5, "after\n");

  /* a and c refused once and are behind: nothing more was pushed. */
  CHECK_EQ_INT(a.refused, 1);
  CHECK_EQ_INT(c.refused, 1);
  CHECK_EQ_INT(json_array_size(a.items), 3);
  CHECK_EQ_INT(json_array_size(c.items), 3);
  /* Resumed, each gets what it missed from the ring, in order, no gap. */
  CHECK_EQ_INT(stg_logsub_resume(sa), 0);
  CHECK_EQ_INT(stg_logsub_resume(sc), 0);
  CHECK_EQ_INT(stg_logsub_resume(sb), 0); /* not behind: nothing */
  CHECK_EQ_INT(json_array_size(a.items), 9); /* it does not see the worker */
  for (size_t i = 0; i < json_array_size(a.items); i++) {
    CHECK_STR(jstr(json_array_get(a.items, i), "component"), "server");
    CHECK_EQ_INT(jint(json_array_get(a.items, i), "seq"), (long long)i + 1);
  }
  if (json_array_size(a.items) == 9)
    CHECK_STR(jstr(json_array_get(a.items, 8), "line"), "after");
  /* b, not slow, got all 11 records; c got the same, in the same order. */
  CHECK_EQ_INT(json_array_size(b.items), 11);
  CHECK(json_equal(b.items, c.items));
  /* Live again. */
  feed_str(srv, 5, "live\n");
  CHECK_EQ_INT(json_array_size(a.items), 10);
  CHECK_EQ_INT(json_array_size(c.items), 12);
  /* e stopped after 2. */
  CHECK_EQ_INT(json_array_size(e.items), 2);

  /* A tail that does not fit: gaps, then the end. */
  cap_t d;
  cap_init(&d);
  d.refuse = true;
  stg_logsub_t *sd = subscribe(s, &d, NULL, 0, 100, false);
  CHECK_EQ_INT(json_array_size(d.items), 3);
  if (json_array_size(d.items) == 3) {
    CHECK_EQ_INT(jint(json_array_get(d.items, 0), "gap"), 10);
    CHECK_EQ_INT(jint(json_array_get(d.items, 1), "gap"), 2);
    CHECK(json_is_true(json_object_get(json_array_get(d.items, 2), "end")));
  }
  CHECK_EQ_INT(a.bad_lines + b.bad_lines + c.bad_lines + d.bad_lines, 0);
  stg_logsub_cancel(sa);
  stg_logsub_cancel(sb);
  stg_logsub_cancel(sc);
  stg_logsub_cancel(sd);
  finish(s);
  json_decref(a.items);
  json_decref(b.items);
  json_decref(c.items);
  json_decref(d.items);
  json_decref(e.items);
}

/* Feeds n records alternating between two sources: "s NNNNN" / "w NNNNN". */
static void feed_many(stg_logsrc_t *a, stg_logsrc_t *b, int from, int n) {
  for (int i = from; i < from + n; i++) {
    char line[64];
    int len = snprintf(line, sizeof line, "%c %05d\n", i % 3 ? 's' : 'w', i);
    stg_logsrc_feed(i % 3 ? a : b, i % 3 ? 5 : 6, STG_LOGSTREAM_OUT, line, (size_t)len);
  }
}

/* Number of gap objects in a subscriber's items. */
static size_t n_gaps(json_t *items) {
  size_t n = 0;
  for (size_t i = 0; i < json_array_size(items); i++)
    n += json_object_get(json_array_get(items, i), "gap") != NULL;
  return n;
}

TEST(catchup_in_order) {
  setup();
  stg_logstore_t *s = open_store(0, 5, 0, 0); /* the default ring: 8 MiB */
  REQUIRE(s != NULL);
  stg_logsrc_t *srv = source(s, "server"), *wrk = source(s, "worker");
  cap_t live, slow;
  cap_init(&live);
  cap_init(&slow);
  stg_logsub_t *sl = subscribe(s, &live, NULL, 0, 0, true);
  stg_logsub_t *ss = subscribe(s, &slow, NULL, 0, 0, true);
  slow.limited = true;
  slow.room = 100;
  /* A subscriber whose queue has room for 100 objects, emptied now and
   * then (a resume each time), sometimes twice in a row, while 20,000
   * records arrive from two components. */
  int resumes = 0, still_behind = 0;
  for (int round = 0; round < 40; round++) {
    feed_many(srv, wrk, round * 500, 500);
    if (round % 4 == 3)
      continue;
    slow.room = 300;
    int more = stg_logsub_resume(ss);
    resumes++;
    still_behind += more;
    if (round % 7 == 0) {
      slow.room = 300;
      stg_logsub_resume(ss);
    }
  }
  CHECK(still_behind > 0); /* it did fall behind */
  CHECK(slow.refused > 0);
  /* A resume while it still refuses delivers nothing and says so. */
  slow.room = 0;
  size_t before = json_array_size(slow.items);
  CHECK_EQ_INT(stg_logsub_resume(ss), 1);
  CHECK_EQ_INT(json_array_size(slow.items), before);
  /* Unlimited again: a few resumes (each one sends at most ~256 KiB). */
  slow.limited = false;
  int calls = 0;
  while (stg_logsub_resume(ss) && calls < 1000)
    calls++;
  CHECK(calls >= 1); /* more than one call's worth was owed */
  feed_many(srv, wrk, 20000, 10); /* live again */
  CHECK_EQ_INT(json_array_size(live.items), 20010);
  /* Every record exactly once, in the order live delivery had them. */
  CHECK_EQ_INT(n_gaps(slow.items), 0);
  CHECK_EQ_INT(json_array_size(slow.items), 20010);
  CHECK(json_equal(live.items, slow.items));
  long long last_us = 0, seq_s = 0, seq_w = 0;
  for (size_t i = 0; i < json_array_size(slow.items); i++) {
    json_t *o = json_array_get(slow.items, i);
    CHECK(jint(o, "us") > last_us);
    last_us = jint(o, "us");
    long long *seq = strcmp(jstr(o, "component"), "server") == 0 ? &seq_s : &seq_w;
    CHECK_EQ_INT(jint(o, "seq"), ++*seq);
    char want[16];
    snprintf(want, sizeof want, "%c %05d", i % 3 ? 's' : 'w', (int)i);
    if (strcmp(jstr(o, "line"), want) != 0) {
      CHECK_STR(jstr(o, "line"), want);
      break;
    }
  }
  CHECK_EQ_INT(slow.bad_lines + live.bad_lines, 0);
  stg_logsub_cancel(sl);
  stg_logsub_cancel(ss);
  finish(s);
  json_decref(live.items);
  json_decref(slow.items);
}

TEST(catchup_past_the_ring) {
  setup();
  stg_logstore_t *s = open_store(0, 5, 0, 8192); /* about 70 records each */
  REQUIRE(s != NULL);
  stg_logsrc_t *srv = source(s, "server"), *wrk = source(s, "worker");
  cap_t live, slow, one;
  cap_init(&live);
  cap_init(&slow);
  cap_init(&one);
  const char *only_server[] = {"server"};
  stg_logsub_t *sl = subscribe(s, &live, NULL, 0, 0, true);
  stg_logsub_t *ss = subscribe(s, &slow, NULL, 0, 0, true);
  stg_logsub_t *so = subscribe(s, &one, only_server, 1, 0, true);
  feed_many(srv, wrk, 0, 30);
  slow.refuse = one.refuse = true;
  feed_many(srv, wrk, 30, 3000); /* far more than the rings hold */
  slow.refuse = one.refuse = false;
  CHECK_EQ_INT(slow.refused, 1);
  CHECK_EQ_INT(json_array_size(slow.items), 30);

  /* What the rings still hold: a tail of everything. */
  cap_t ring;
  cap_init(&ring);
  stg_logsub_t *sr = subscribe(s, &ring, NULL, 0, 100000, false);
  size_t in_ring = json_array_size(ring.items) - 1; /* and the end */
  REQUIRE(in_ring > 20 && in_ring < 400);
  long long first_s = 0, first_w = 0; /* the oldest seq in each ring */
  for (size_t i = 0; i < in_ring; i++) {
    json_t *o = json_array_get(ring.items, i);
    long long *f = strcmp(jstr(o, "component"), "server") == 0 ? &first_s : &first_w;
    if (*f == 0)
      *f = jint(o, "seq");
  }
  /* The first record of each component it missed (it refused index 30). */
  json_t *miss_s = NULL, *miss_w = NULL;
  for (size_t i = 30; i < json_array_size(live.items) && !(miss_s && miss_w); i++) {
    json_t *o = json_array_get(live.items, i);
    if (strcmp(jstr(o, "component"), "server") == 0 && !miss_s)
      miss_s = o;
    if (strcmp(jstr(o, "component"), "worker") == 0 && !miss_w)
      miss_w = o;
  }
  REQUIRE(miss_s && miss_w);

  CHECK_EQ_INT(stg_logsub_resume(ss), 0);
  CHECK_EQ_INT(stg_logsub_resume(so), 0);
  /* slow: the 30, a gap per component (in the order they began), then
   * exactly what the rings hold, in order. */
  CHECK_EQ_INT(json_array_size(slow.items), 30 + 2 + in_ring);
  if (json_array_size(slow.items) == 30 + 2 + in_ring) {
    json_t *g1 = json_array_get(slow.items, 30), *g2 = json_array_get(slow.items, 31);
    json_t *gs = strcmp(jstr(g1, "component"), "server") == 0 ? g1 : g2;
    json_t *gw = gs == g1 ? g2 : g1;
    CHECK_STR(jstr(gs, "component"), "server");
    CHECK_STR(jstr(gw, "component"), "worker");
    CHECK_EQ_INT(jint(gs, "gap"), first_s - jint(miss_s, "seq"));
    CHECK_EQ_INT(jint(gw, "gap"), first_w - jint(miss_w, "seq"));
    CHECK_EQ_INT(jint(gs, "us"), jint(miss_s, "us"));
    CHECK_EQ_INT(jint(gw, "us"), jint(miss_w, "us"));
    for (size_t i = 0; i < in_ring; i++)
      CHECK(json_equal(json_array_get(slow.items, 32 + i), json_array_get(ring.items, i)));
  }
  /* one: its gap counts the server only. */
  CHECK_EQ_INT(n_gaps(one.items), 1);
  json_t *g = json_array_get(one.items, 20); /* 20 of the first 30 were the server's */
  CHECK_EQ_INT(jint(g, "gap"), first_s - jint(miss_s, "seq"));
  /* Live again, and every one got each later record once. */
  feed_many(srv, wrk, 3030, 3);
  CHECK_EQ_INT(json_array_size(slow.items), 30 + 2 + in_ring + 3);
  CHECK(json_equal(json_array_get(slow.items, json_array_size(slow.items) - 1),
                   json_array_get(live.items, json_array_size(live.items) - 1)));
  CHECK_EQ_INT(json_array_size(live.items), 3033);
  CHECK_EQ_INT(n_gaps(live.items), 0);
  CHECK_EQ_INT(slow.bad_lines + one.bad_lines, 0);
  stg_logsub_cancel(sl);
  stg_logsub_cancel(ss);
  stg_logsub_cancel(so);
  stg_logsub_cancel(sr);
  finish(s);
  json_decref(live.items);
  json_decref(slow.items);
  json_decref(one.items);
  json_decref(ring.items);
}

/* A subscriber of one component, behind while another floods: a gap for
 * its own records only; one cancelled while behind is freed cleanly. */
TEST(catchup_one_component_and_cancel) {
  setup();
  stg_logstore_t *s = open_store(0, 5, 0, 2048);
  REQUIRE(s != NULL);
  stg_logsrc_t *srv = source(s, "server"), *wrk = source(s, "worker");
  cap_t a, b;
  cap_init(&a);
  cap_init(&b);
  const char *only_worker[] = {"worker"};
  stg_logsub_t *sa = subscribe(s, &a, only_worker, 1, 0, true);
  stg_logsub_t *sb = subscribe(s, &b, NULL, 0, 0, true);
  a.refuse = b.refuse = true;
  feed_str(wrk, 6, "w1\nw2\n");
  for (int i = 0; i < 200; i++)
    feed_str(srv, 5, "server line that pushes the worker's out\n");
  feed_str(wrk, 6, "w3\nw4\n"); /* these evict w1 w2 from the worker's ring */
  for (int i = 0; i < 60; i++)
    feed_str(wrk, 6, "a longer worker line, so that the ring is full\n");
  a.refuse = false;
  CHECK_EQ_INT(stg_logsub_resume(sa), 0);
  CHECK(json_array_size(a.items) > 2);
  if (json_array_size(a.items) > 2) {
    json_t *g = json_array_get(a.items, 0);
    CHECK_STR(jstr(g, "component"), "worker");
    CHECK(jint(g, "gap") >= 2);
    CHECK_EQ_INT(jint(g, "gap") + (long long)json_array_size(a.items) - 1, 64);
  }
  /* b is cancelled while behind. */
  stg_logsub_cancel(sb);
  feed_str(wrk, 6, "more\n");
  CHECK_EQ_INT(json_array_size(b.items), 0);
  stg_logsub_cancel(sa);
  finish(s);
  json_decref(a.items);
  json_decref(b.items);
}

TEST(tail_merge) {
  setup();
  stg_logstore_t *s = open_store(0, 5, 0, 2048);
  REQUIRE(s != NULL);
  const char *both[] = {"a", "b", "later"};
  cap_t later;
  cap_init(&later);
  /* A name without a source yet matches once it appears. */
  stg_logsub_t *sl = subscribe(s, &later, both + 2, 1, 10, true);
  CHECK_EQ_INT(json_array_size(later.items), 0);
  stg_logsrc_t *a = source(s, "a"), *b = source(s, "b");
  feed_str(a, 1, "a1\n");
  feed_str(b, 2, "b1\n");
  feed_str(a, 1, "a2\n");
  stg_logsrc_note(b, "restarting in %d ms", 250);
  feed_str(a, 1, "a3\n");
  feed_str(b, 2, "b3\n");
  cap_t c;
  cap_init(&c);
  stg_logsub_t *sc = subscribe(s, &c, both, 2, 2, false);
  const char *want[] = {"a2", "restarting in 250 ms", "a3", "b3"};
  CHECK_EQ_INT(json_array_size(c.items), 5);
  for (size_t i = 0; i < 4 && i < json_array_size(c.items); i++)
    CHECK_STR(jstr(json_array_get(c.items, i), "line"), want[i]);
  if (json_array_size(c.items) == 5) {
    json_t *n = json_array_get(c.items, 1);
    CHECK_STR(jstr(n, "stream"), "sys");
    CHECK_EQ_INT(jint(n, "pid"), getpid());
    CHECK_EQ_INT(json_object_size(json_array_get(c.items, 4)), 1);
    CHECK(json_is_true(json_object_get(json_array_get(c.items, 4), "end")));
  }
  /* Not following: nothing more arrives. */
  feed_str(a, 1, "a4\n");
  CHECK_EQ_INT(json_array_size(c.items), 5);
  stg_logsub_cancel(sc);

  /* The ring keeps what fits its byte cap, newest last. */
  for (int i = 1; i <= 100; i++) {
    char line[80];
    int n = snprintf(line, sizeof line, "line %05d %40s\n", i, "");
    stg_logsrc_feed(b, 2, STG_LOGSTREAM_OUT, line, (size_t)n);
  }
  cap_t r;
  cap_init(&r);
  stg_logsub_t *sr = subscribe(s, &r, both + 1, 1, 1000, false);
  size_t got = json_array_size(r.items);
  CHECK(got > 2 && got < 50);
  if (got > 2) {
    CHECK_CONTAINS(jstr(json_array_get(r.items, got - 2), "line"), "line 00100");
    CHECK_EQ_INT(jint(json_array_get(r.items, got - 2), "seq"), 103);
    CHECK_EQ_INT(jint(json_array_get(r.items, 0), "seq"), 103 - (long long)got + 2);
  }
  stg_logsub_cancel(sr);

  stg_logsrc_t *lt = source(s, "later");
  feed_str(lt, 9, "hello\n");
  CHECK_EQ_INT(json_array_size(later.items), 1);
  stg_logsub_cancel(sl);
  /* Bad names. */
  stg_logsrc_t *bad;
  CHECK_EQ_INT(stg_logstore_source(s, "../x", &bad), UV_EINVAL);
  CHECK_EQ_INT(stg_logstore_source(s, "", &bad), UV_EINVAL);
  finish(s);
  json_decref(c.items);
  json_decref(r.items);
  json_decref(later.items);
}

static int file_has_data(void *arg) {
  struct stat st;
  return stat(arg, &st) == 0 && st.st_size > 0;
}

TEST(reopen_and_no_file) {
  setup();
  stg_logstore_t *s = open_store(0, 5, 0, 0);
  REQUIRE(s != NULL);
  stg_logsrc_t *src = source(s, "server");
  stg_logsrc_t *sup = source(s, "supervisor");
  stg_logsrc_set_flags(sup, STG_LOGSRC_NO_FILE);
  stg_logsrc_note(sup, "memory only");
  char path[256], moved[300];
  snprintf(path, sizeof path, "%s/server.log", dir);
  snprintf(moved, sizeof moved, "%s/server.log.moved", dir);
  feed_str(src, 4, "one\n");
  CHECK(wait_until(file_has_data, path));
  REQUIRE(rename(path, moved) == 0);
  stg_logstore_reopen(s);
  feed_str(src, 4, "two\n");
  /* The same source again. */
  stg_logsrc_t *again = source(s, "server");
  CHECK(again == src);
  finish(s);
  stg_logread_list_t l;
  REQUIRE(read_back("server", &l) == 0);
  CHECK_EQ_INT(l.n, 1);
  if (l.n == 1)
    CHECK(l.v[0].len == 3 && memcmp(l.v[0].text, "two", 3) == 0);
  stg_logread_list_free(&l);
  /* The moved file kept what was written before the reopen. */
  char buf[256] = "";
  FILE *f = fopen(moved, "r");
  REQUIRE(f != NULL);
  size_t got = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[got] = '\0';
  CHECK_CONTAINS(buf, " 4 out one\n");
  CHECK(strstr(buf, "two") == NULL);
  snprintf(path, sizeof path, "%s/supervisor.log", dir);
  CHECK(access(path, F_OK) != 0);
}

int main(void) {
  snprintf(root, sizeof root, "/tmp/stg-logstore.XXXXXX");
  if (mkdtemp(root) == NULL)
    return 1;
  RUN(split_lines);
  RUN(timestamps_monotonic);
  RUN(rotation);
  RUN(queue_drops);
  RUN(disk_full);
  RUN(subscriber_gaps);
  RUN(catchup_in_order);
  RUN(catchup_past_the_ring);
  RUN(catchup_one_component_and_cancel);
  RUN(tail_merge);
  RUN(reopen_and_no_file);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", root);
  if (system(cmd) != 0)
    return 1;
  return CHECK_DONE();
}
