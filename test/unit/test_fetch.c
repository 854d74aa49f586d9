/* stg_fetch against stg-test-tls-server (test/fixtures/tls-server), started
 * here as a subprocess on a free loopback port. Every test runs one fetch
 * on its own loop and ends by checking the loop closes cleanly. */
/* Paths here are built from a short mkdtemp name; truncation cannot happen. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mbedtls/sha256.h>
#include <uv.h>

#include "check.h"
#include "spawn_port.h"
#include "fetch.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

extern char **environ;

static char tmp[PATH_MAX], root[PATH_MAX], out[PATH_MAX], certs[PATH_MAX];
static char ca[PATH_MAX], signpub[PATH_MAX], otherpub[PATH_MAX];
static char server_bin[PATH_MAX];

typedef struct {
  pid_t pid;
  int port;
  char log[PATH_MAX];
} server_t;

static server_t tls, plain, wrong;

#define FILE_SIZE (40 * 1024)
static unsigned char content[FILE_SIZE];
static char content_hex[65];

/* --- fixture plumbing ----------------------------------------------------------- */

static void path_join(char *dst, const char *a, const char *b) {
  snprintf(dst, PATH_MAX, "%s/%s", a, b);
}

static int write_file(const char *path, const void *buf, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return -1;
  ssize_t n = write(fd, buf, len);
  close(fd);
  return n == (ssize_t)len ? 0 : -1;
}

/* Reads a whole file (up to cap) into a malloc'd buffer; NULL if absent. */
static unsigned char *slurp(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NULL;
  size_t cap = 1 << 20, n = 0;
  unsigned char *buf = malloc(cap);
  ssize_t r;
  while (buf && (r = read(fd, buf + n, cap - n)) > 0)
    n += (size_t)r;
  close(fd);
  *len = n;
  return buf;
}

static bool exists(const char *path) { return access(path, F_OK) == 0; }

static void hex_of(const unsigned char *buf, size_t len, char out_hex[65]) {
  unsigned char d[32];
  mbedtls_sha256(buf, len, d, 0);
  for (int i = 0; i < 32; i++)
    sprintf(out_hex + 2 * i, "%02x", d[i]);
}

static bool file_is(const char *path, const void *want, size_t wantlen) {
  size_t len;
  unsigned char *got = slurp(path, &len);
  bool same = got != NULL && len == wantlen && memcmp(got, want, len) == 0;
  free(got);
  return same;
}

static int server_start(server_t *s, const char *name, const char *mode_cert) {
  path_join(s->log, tmp, name);
  char cert[PATH_MAX], key[PATH_MAX];
  snprintf(cert, sizeof cert, "%s/%s.crt", certs, mode_cert ? mode_cert : "server");
  snprintf(key, sizeof key, "%s/%s.key", certs, mode_cert ? mode_cert : "server");
  char *argv_tls[] = {server_bin, "--root", root, "--cert", cert, "--key", key,
                      "--log", s->log, NULL};
  char *argv_plain[] = {server_bin, "--root", root, "--plain", "--log", s->log, NULL};
  s->port = spawn_port(strcmp(name, "plain.log") == 0 ? argv_plain : argv_tls, &s->pid);
  return s->port > 0 ? 0 : -1;
}

static void server_stop(server_t *s) { spawn_stop(&s->pid); }

static bool log_has(const server_t *s, const char *needle) {
  size_t len;
  unsigned char *buf = slurp(s->log, &len);
  if (buf == NULL)
    return false;
  buf[len < (1u << 20) ? len : len - 1] = '\0';
  bool has = strstr((char *)buf, needle) != NULL;
  free(buf);
  return has;
}

static void url_of(char *dst, const server_t *s, const char *path) {
  snprintf(dst, PATH_MAX, "%s://127.0.0.1:%d/%s", s == &plain ? "http" : "https", s->port, path);
}

/* --- running one fetch ------------------------------------------------------------- */

typedef struct {
  stg_fetch_t f;
  uv_timer_t guard; /* cancels a fetch that hangs, so the test fails, not times out */
  bool done, guard_fired;
  int status;
  char hex[65];
  int failures;
  stg_fetch_error_t kinds[64];
  bool retried[64];
  uint64_t retry_in[64];
  char reason[1024]; /* the last failure's */
  int progress_calls;
  uint64_t last_done, last_total, progress_prev_ns, progress_min_gap_ns;
  double last_rate;
  bool cancel_on_progress, cancel_on_failure;
} run_t;

static void on_progress(stg_fetch_t *f, uint64_t done, uint64_t total, double rate) {
  run_t *r = f->data;
  uint64_t now = uv_hrtime();
  if (r->progress_calls > 0 && now - r->progress_prev_ns < r->progress_min_gap_ns)
    r->progress_min_gap_ns = now - r->progress_prev_ns;
  r->progress_prev_ns = now;
  r->progress_calls++;
  r->last_done = done;
  r->last_total = total;
  r->last_rate = rate;
  if (r->cancel_on_progress && done > 0)
    stg_fetch_cancel(f);
}

static void on_failure(stg_fetch_t *f, stg_fetch_error_t kind, const char *reason, bool will_retry,
                       uint64_t retry_in_ms) {
  run_t *r = f->data;
  if (r->failures < 64) {
    r->kinds[r->failures] = kind;
    r->retried[r->failures] = will_retry;
    r->retry_in[r->failures] = retry_in_ms;
  }
  r->failures++;
  snprintf(r->reason, sizeof r->reason, "%s", reason);
  fprintf(stderr, "  failure (%s, %s): %s\n", stg_fetch_error_name(kind),
          will_retry ? "retry" : "final", reason);
  if (r->cancel_on_failure)
    stg_fetch_cancel(f);
}

static void on_done(stg_fetch_t *f, int status, const char *hex) {
  run_t *r = f->data;
  r->done = true;
  r->status = status;
  snprintf(r->hex, sizeof r->hex, "%s", hex ? hex : "");
  uv_close((uv_handle_t *)&r->guard, NULL);
}

static void on_guard(uv_timer_t *t) {
  run_t *r = container_of(t, run_t, guard);
  r->guard_fired = true;
  stg_fetch_cancel(&r->f);
}

/* Defaults for tests: the test CA, short delays, a few attempts. */
static stg_fetch_options_t opts(const char *url, const char *dest) {
  stg_fetch_options_t o;
  memset(&o, 0, sizeof o);
  o.url = url;
  o.dest = dest;
  o.ca_file = ca;
  o.connect_timeout_ms = 5000;
  o.low_speed_limit = 1024;
  o.low_speed_time_ms = 1000;
  o.retry_initial_ms = 20;
  o.retry_max_ms = 100;
  o.max_attempts = 3;
  return o;
}

/* Runs one fetch to its end. Returns uv_loop_close's result (0: clean). */
static int run_fetch(stg_fetch_options_t *o, run_t *r) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  o->progress = on_progress;
  o->failure = on_failure;
  o->done = on_done;
  o->data = r;
  r->progress_min_gap_ns = UINT64_MAX;
  int rc = stg_fetch_start(&loop, &r->f, o);
  if (rc != 0) {
    fprintf(stderr, "  stg_fetch_start: %s\n", uv_strerror(rc));
    r->status = rc;
    uv_loop_close(&loop);
    return rc;
  }
  uv_timer_init(&loop, &r->guard);
  uv_timer_start(&r->guard, on_guard, 30000, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop);
}

static void dest_path(char *dst, const char *name) { path_join(dst, out, name); }

static void partial_paths(const char *dest, char *partial, char *validator) {
  snprintf(partial, PATH_MAX, "%s.partial", dest);
  snprintf(validator, PATH_MAX, "%s.partial.validator", dest);
}

static void clean_dest(const char *dest) {
  char p[PATH_MAX], v[PATH_MAX];
  partial_paths(dest, p, v);
  unlink(dest);
  unlink(p);
  unlink(v);
}

static const char old_content[] = "a previous good file\n";

/* A failed fetch leaves the previous file alone and nothing unverified in
 * its place. */
static void check_untouched(const char *dest) {
  CHECK(file_is(dest, old_content, sizeof old_content - 1));
}

/* --- the tests --------------------------------------------------------------------------- */

TEST(ok_with_sha256_file) {
  char url[PATH_MAX], dest[PATH_MAX], p[PATH_MAX], v[PATH_MAX];
  url_of(url, &tls, "a.bin");
  dest_path(dest, "ok1");
  clean_dest(dest);
  stg_fetch_options_t o = opts(url, dest);
  o.mode = 0755;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK(r.done && !r.guard_fired);
  CHECK_EQ_INT(r.status, 0);
  CHECK_EQ_INT(r.failures, 0);
  CHECK_STR(r.hex, content_hex);
  struct stat st;
  CHECK(stat(dest, &st) == 0 && (st.st_mode & 07777) == 0755);
  CHECK(file_is(dest, content, sizeof content));
  partial_paths(dest, p, v);
  CHECK(!exists(p));
  CHECK(!exists(v));
  CHECK(r.progress_calls >= 1);
  CHECK(r.last_done <= sizeof content);
  CHECK(log_has(&tls, "GET /a.bin.sha256 200"));
}

/* By name: curl's threaded resolver (a worker thread and a wakeup socket
 * on the loop) from /etc/hosts, and the certificate's DNS name. */
TEST(ok_by_name_localhost) {
  char url[PATH_MAX], dest[PATH_MAX];
  snprintf(url, sizeof url, "https://localhost:%d/a.bin", tls.port);
  dest_path(dest, "byname");
  clean_dest(dest);
  stg_fetch_options_t o = opts(url, dest);
  o.public_key = signpub;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, 0);
  CHECK_EQ_INT(r.failures, 0);
  CHECK(file_is(dest, content, sizeof content));
}

TEST(ok_bare_sha256_and_given_digest) {
  char url[PATH_MAX], dest[PATH_MAX];
  url_of(url, &tls, "bare.bin"); /* bare.bin.sha256 holds just the hex */
  dest_path(dest, "ok2");
  clean_dest(dest);
  stg_fetch_options_t o = opts(url, dest);
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, 0);
  CHECK(file_is(dest, content, sizeof content));

  /* A digest in the options: no .sha256 request at all (nosum.bin has none). */
  url_of(url, &tls, "nosum.bin");
  clean_dest(dest);
  o = opts(url, dest);
  char upper[65];
  for (int i = 0; i < 65; i++)
    upper[i] = (char)toupper((unsigned char)content_hex[i]);
  o.sha256_hex = upper;
  run_t r2 = {0};
  CHECK_EQ_INT(run_fetch(&o, &r2), 0);
  CHECK_EQ_INT(r2.status, 0);
  CHECK_EQ_INT(r2.failures, 0);
  CHECK(file_is(dest, content, sizeof content));
  CHECK(!log_has(&tls, "GET /nosum.bin.sha256"));
  struct stat st;
  CHECK(stat(dest, &st) == 0 && (st.st_mode & 07777) == 0644);
}

TEST(not_found_keeps_previous_file) {
  char url[PATH_MAX], dest[PATH_MAX], p[PATH_MAX], v[PATH_MAX];
  url_of(url, &tls, "missing.bin");
  dest_path(dest, "nf");
  clean_dest(dest);
  REQUIRE(write_file(dest, old_content, sizeof old_content - 1) == 0);
  stg_fetch_options_t o = opts(url, dest);
  o.sha256_hex = content_hex;
  o.max_attempts = 2;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, UV_EPROTO);
  CHECK_EQ_INT(r.failures, 2);
  CHECK_EQ_INT(r.kinds[0], STG_FETCH_E_HTTP);
  CHECK(r.retried[0] && !r.retried[1]);
  CHECK_CONTAINS(r.reason, "HTTP status 404");
  check_untouched(dest);
  partial_paths(dest, p, v);
  CHECK(!exists(v));
}

TEST(server_error_then_success_with_backoff) {
  char url[PATH_MAX], dest[PATH_MAX];
  url_of(url, &tls, "flaky/3/a.bin");
  dest_path(dest, "flaky");
  clean_dest(dest);
  stg_fetch_options_t o = opts(url, dest);
  o.retry_initial_ms = 20;
  o.retry_max_ms = 50;
  o.max_attempts = 0; /* forever */
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, 0);
  CHECK_EQ_INT(r.failures, 3);
  for (int i = 0; i < 3; i++) {
    CHECK_EQ_INT(r.kinds[i], STG_FETCH_E_HTTP);
    CHECK(r.retried[i]);
  }
  CHECK_EQ_INT(r.retry_in[0], 20);
  CHECK_EQ_INT(r.retry_in[1], 40);
  CHECK_EQ_INT(r.retry_in[2], 50);
  CHECK_CONTAINS(r.reason, "HTTP status 500");
  CHECK(file_is(dest, content, sizeof content));
}

TEST(cut_then_resume_with_range) {
  char url[PATH_MAX], dest[PATH_MAX], p[PATH_MAX], v[PATH_MAX], want[128];
  url_of(url, &tls, "cut/a.bin");
  dest_path(dest, "cut");
  clean_dest(dest);
  stg_fetch_options_t o = opts(url, dest);
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, 0);
  CHECK_EQ_INT(r.failures, 1);
  CHECK_EQ_INT(r.kinds[0], STG_FETCH_E_NETWORK);
  CHECK(r.retried[0]);
  /* The second request resumed where the first stopped, with If-Range. */
  snprintf(want, sizeof want, "GET /cut/a.bin 206 range=bytes=%d- if-range=\"", FILE_SIZE / 2);
  CHECK(log_has(&tls, want));
  CHECK_STR(r.hex, content_hex); /* the digest covers the resumed prefix */
  CHECK(file_is(dest, content, sizeof content));
  partial_paths(dest, p, v);
  CHECK(!exists(p) && !exists(v));
}

TEST(truncated_every_time) {
  char url[PATH_MAX], dest[PATH_MAX], p[PATH_MAX], v[PATH_MAX];
  url_of(url, &tls, "truncate/a.bin");
  dest_path(dest, "trunc");
  clean_dest(dest);
  REQUIRE(write_file(dest, old_content, sizeof old_content - 1) == 0);
  stg_fetch_options_t o = opts(url, dest);
  o.max_attempts = 3;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, UV_EPROTO);
  CHECK_EQ_INT(r.failures, 3);
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(r.kinds[i], STG_FETCH_E_NETWORK);
  check_untouched(dest);
  /* Each attempt resumed: three quarters, then seven eighths are on disk. */
  partial_paths(dest, p, v);
  struct stat st;
  CHECK(stat(p, &st) == 0 && st.st_size == FILE_SIZE / 2 + FILE_SIZE / 4 + FILE_SIZE / 8);
  CHECK(exists(v));
  clean_dest(dest);
}

TEST(connection_reset) {
  char url[PATH_MAX], dest[PATH_MAX];
  url_of(url, &tls, "reset/a.bin");
  dest_path(dest, "reset");
  clean_dest(dest);
  stg_fetch_options_t o = opts(url, dest);
  o.sha256_hex = content_hex;
  o.max_attempts = 1;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, UV_EPROTO);
  CHECK_EQ_INT(r.failures, 1);
  CHECK_EQ_INT(r.kinds[0], STG_FETCH_E_NETWORK);
  CHECK(!exists(dest));
  clean_dest(dest);
}

/* Two fetches on one loop, each with its own handles. */
TEST(two_at_once) {
  char url1[PATH_MAX], url2[PATH_MAX], dest1[PATH_MAX], dest2[PATH_MAX];
  url_of(url1, &tls, "a.bin");
  url_of(url2, &tls, "cut/bare.bin");
  dest_path(dest1, "two1");
  dest_path(dest2, "two2");
  clean_dest(dest1);
  clean_dest(dest2);
  stg_fetch_options_t o1 = opts(url1, dest1), o2 = opts(url2, dest2);
  run_t r1 = {0}, r2 = {0};
  uv_loop_t loop;
  uv_loop_init(&loop);
  o1.progress = o2.progress = on_progress;
  o1.failure = o2.failure = on_failure;
  o1.done = o2.done = on_done;
  o1.data = &r1;
  o2.data = &r2;
  REQUIRE(stg_fetch_start(&loop, &r1.f, &o1) == 0);
  REQUIRE(stg_fetch_start(&loop, &r2.f, &o2) == 0);
  uv_timer_init(&loop, &r1.guard);
  uv_timer_start(&r1.guard, on_guard, 30000, 0);
  uv_timer_init(&loop, &r2.guard);
  uv_timer_start(&r2.guard, on_guard, 30000, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  CHECK_EQ_INT(r1.status, 0);
  CHECK_EQ_INT(r2.status, 0);
  CHECK_EQ_INT(r2.failures, 1); /* the cut, then a resume */
  CHECK(file_is(dest1, content, sizeof content));
  CHECK(file_is(dest2, content, sizeof content));
}

TEST(server_ignores_range_start_over) {
  char url[PATH_MAX], dest[PATH_MAX], p[PATH_MAX], v[PATH_MAX], val[PATH_MAX + 64];
  url_of(url, &tls, "norange/a.bin");
  dest_path(dest, "norange");
  clean_dest(dest);
  partial_paths(dest, p, v);
  /* A stale partial: 1000 wrong bytes, with a validator for this URL. */
  unsigned char junk[1000];
  memset(junk, 'x', sizeof junk);
  REQUIRE(write_file(p, junk, sizeof junk) == 0);
  int n = snprintf(val, sizeof val, "url %s\netag \"stale\"\n", url);
  REQUIRE(write_file(v, val, (size_t)n) == 0);
  stg_fetch_options_t o = opts(url, dest);
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, 0);
  CHECK_EQ_INT(r.failures, 0);
  CHECK(log_has(&tls, "GET /norange/a.bin 200 range=bytes=1000- if-range=\"stale\""));
  CHECK(file_is(dest, content, sizeof content));
}

TEST(complete_partial_gets_416_then_start_over) {
  char url[PATH_MAX], dest[PATH_MAX], p[PATH_MAX], v[PATH_MAX], src[PATH_MAX];
  char val[PATH_MAX + 128];
  url_of(url, &tls, "a.bin");
  dest_path(dest, "r416");
  clean_dest(dest);
  partial_paths(dest, p, v);
  path_join(src, root, "a.bin");
  struct stat st;
  REQUIRE(stat(src, &st) == 0);
  REQUIRE(write_file(p, content, sizeof content) == 0);
  int n = snprintf(val, sizeof val, "url %s\netag \"%llx-%llx\"\n", url,
                   (unsigned long long)st.st_size, (unsigned long long)st.st_mtime);
  REQUIRE(write_file(v, val, (size_t)n) == 0);
  stg_fetch_options_t o = opts(url, dest);
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, 0);
  CHECK_EQ_INT(r.failures, 0);
  char want[64];
  snprintf(want, sizeof want, "GET /a.bin 416 range=bytes=%d-", FILE_SIZE);
  CHECK(log_has(&tls, want));
  CHECK(file_is(dest, content, sizeof content));
}

TEST(wrong_checksum_retried_then_fails) {
  char url[PATH_MAX], dest[PATH_MAX], p[PATH_MAX], v[PATH_MAX];
  url_of(url, &tls, "badsum/a.bin");
  dest_path(dest, "badsum");
  clean_dest(dest);
  REQUIRE(write_file(dest, old_content, sizeof old_content - 1) == 0);
  stg_fetch_options_t o = opts(url, dest);
  o.max_attempts = 2;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, UV_EINVAL);
  CHECK_EQ_INT(r.failures, 2);
  CHECK_EQ_INT(r.kinds[0], STG_FETCH_E_CHECKSUM);
  CHECK(r.retried[0]);
  CHECK_CONTAINS(r.reason, "checksum mismatch");
  check_untouched(dest);
  partial_paths(dest, p, v);
  CHECK(!exists(p) && !exists(v));
}

TEST(signature_ok) {
  char url[PATH_MAX], dest[PATH_MAX];
  url_of(url, &tls, "a.bin");
  dest_path(dest, "sig");
  clean_dest(dest);
  stg_fetch_options_t o = opts(url, dest);
  o.public_key = signpub;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, 0);
  CHECK_EQ_INT(r.failures, 0);
  CHECK(file_is(dest, content, sizeof content));
  CHECK(log_has(&tls, "GET /a.bin.sig 200"));
}

static void signature_fails(const char *path, const char *key, const char *why) {
  char url[PATH_MAX], dest[PATH_MAX], p[PATH_MAX], v[PATH_MAX];
  url_of(url, &tls, path);
  dest_path(dest, "badsig");
  clean_dest(dest);
  REQUIRE(write_file(dest, old_content, sizeof old_content - 1) == 0);
  stg_fetch_options_t o = opts(url, dest);
  o.public_key = key;
  o.sha256_hex = content_hex;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, -EBADMSG);
  CHECK_EQ_INT(r.failures, 1); /* fatal: not retried */
  CHECK_EQ_INT(r.kinds[0], STG_FETCH_E_SIGNATURE);
  CHECK(!r.retried[0]);
  CHECK_CONTAINS(r.reason, why);
  check_untouched(dest);
  partial_paths(dest, p, v);
  CHECK(!exists(p) && !exists(v));
}

TEST(bad_signature_is_fatal) { signature_fails("badsig/a.bin", signpub, "verify signature"); }
TEST(signature_by_other_key_is_fatal) { signature_fails("a.bin", otherpub, "verify signature"); }
TEST(missing_signature_is_fatal) { signature_fails("nosum.bin", signpub, "missing"); }

TEST(stall_is_classified) {
  char url[PATH_MAX], dest[PATH_MAX];
  url_of(url, &tls, "stall/a.bin");
  dest_path(dest, "stall");
  clean_dest(dest);
  REQUIRE(write_file(dest, old_content, sizeof old_content - 1) == 0);
  stg_fetch_options_t o = opts(url, dest);
  o.max_attempts = 1;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, UV_ETIMEDOUT);
  CHECK_EQ_INT(r.failures, 1);
  CHECK_EQ_INT(r.kinds[0], STG_FETCH_E_STALLED);
  check_untouched(dest);
  clean_dest(dest);
}

TEST(slow_drip_is_stalled) {
  char url[PATH_MAX], dest[PATH_MAX];
  url_of(url, &tls, "drip/a.bin"); /* 640 B/s, under the 1 KiB/s floor */
  dest_path(dest, "drip");
  clean_dest(dest);
  stg_fetch_options_t o = opts(url, dest);
  o.max_attempts = 1;
  o.sha256_hex = content_hex;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, UV_ETIMEDOUT);
  CHECK_EQ_INT(r.kinds[0], STG_FETCH_E_STALLED);
  CHECK_CONTAINS(r.reason, "stalled");
  CHECK(!exists(dest));
  clean_dest(dest);
}

TEST(slow_drip_progress) {
  char url[PATH_MAX], dest[PATH_MAX];
  url_of(url, &tls, "drip/small.bin"); /* 1536 bytes, 64 every 100 ms */
  dest_path(dest, "dripok");
  clean_dest(dest);
  stg_fetch_options_t o = opts(url, dest);
  o.low_speed_limit = 64;
  o.low_speed_time_ms = 5000;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, 0);
  CHECK(r.progress_calls >= 3);
  CHECK(r.progress_min_gap_ns >= 90 * 1000000ull); /* never more often than ~100 ms */
  CHECK_EQ_INT(r.last_total, 1536);
  CHECK(r.last_rate > 0);
}

TEST(redirects) {
  char url[PATH_MAX], dest[PATH_MAX];
  url_of(url, &tls, "redirect/3/a.bin"); /* 4 hops */
  dest_path(dest, "redir");
  clean_dest(dest);
  stg_fetch_options_t o = opts(url, dest);
  o.sha256_hex = content_hex;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, 0);
  CHECK(file_is(dest, content, sizeof content));

  url_of(url, &tls, "redirect/5/a.bin"); /* 6 hops: one too many */
  clean_dest(dest);
  o = opts(url, dest);
  o.sha256_hex = content_hex;
  o.max_attempts = 2;
  run_t r2 = {0};
  CHECK_EQ_INT(run_fetch(&o, &r2), 0);
  CHECK_EQ_INT(r2.status, UV_EPROTO);
  CHECK_EQ_INT(r2.failures, 2);
  CHECK_EQ_INT(r2.kinds[0], STG_FETCH_E_REDIRECTS);
  CHECK(r2.retried[0]);
  CHECK(!exists(dest));
}

TEST(redirect_to_http_refused) {
  char url[PATH_MAX], dest[PATH_MAX];
  url_of(url, &tls, "tohttp/a.bin");
  dest_path(dest, "tohttp");
  clean_dest(dest);
  stg_fetch_options_t o = opts(url, dest);
  o.sha256_hex = content_hex;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, UV_EPROTO);
  CHECK_EQ_INT(r.failures, 1);
  CHECK_EQ_INT(r.kinds[0], STG_FETCH_E_INSECURE_REDIRECT);
  CHECK(!r.retried[0]);
  CHECK(!exists(dest));
}

TEST(over_the_cap) {
  char url[PATH_MAX], dest[PATH_MAX], p[PATH_MAX], v[PATH_MAX];
  url_of(url, &tls, "a.bin"); /* Content-Length says too much */
  dest_path(dest, "big");
  clean_dest(dest);
  stg_fetch_options_t o = opts(url, dest);
  o.max_size = 10000;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, UV_EFBIG);
  CHECK_EQ_INT(r.failures, 1);
  CHECK_EQ_INT(r.kinds[0], STG_FETCH_E_TOO_BIG);
  CHECK_CONTAINS(r.reason, "over the cap");
  CHECK(!exists(dest));

  url_of(url, &tls, "nolength/a.bin"); /* no length: counted while streaming */
  o = opts(url, dest);
  o.max_size = 10000;
  run_t r2 = {0};
  CHECK_EQ_INT(run_fetch(&o, &r2), 0);
  CHECK_EQ_INT(r2.status, UV_EFBIG);
  CHECK_EQ_INT(r2.kinds[0], STG_FETCH_E_TOO_BIG);
  CHECK(!exists(dest));
  partial_paths(dest, p, v);
  CHECK(!exists(p));

  o = opts(url, dest); /* and without a cap problem it works */
  run_t r3 = {0};
  CHECK_EQ_INT(run_fetch(&o, &r3), 0);
  CHECK_EQ_INT(r3.status, 0);
  CHECK(file_is(dest, content, sizeof content));
}

TEST(certificate_for_wrong_host) {
  char url[PATH_MAX], dest[PATH_MAX];
  url_of(url, &wrong, "a.bin");
  dest_path(dest, "wrong");
  clean_dest(dest);
  stg_fetch_options_t o = opts(url, dest);
  o.max_attempts = 2;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, UV_EPROTO);
  CHECK_EQ_INT(r.failures, 2);
  CHECK_EQ_INT(r.kinds[0], STG_FETCH_E_TLS);
  CHECK(r.retried[0]);
  CHECK_CONTAINS(r.reason, "TLS");
  CHECK_CONTAINS(r.reason, "CN");
  CHECK(!exists(dest));
}

TEST(untrusted_ca) {
  char url[PATH_MAX], dest[PATH_MAX], badca[PATH_MAX];
  url_of(url, &tls, "a.bin");
  dest_path(dest, "untrusted");
  clean_dest(dest);
  snprintf(badca, sizeof badca, "%s/wronghost.crt", certs); /* not a CA at all */
  stg_fetch_options_t o = opts(url, dest);
  o.ca_file = badca;
  o.max_attempts = 1;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.kinds[0], STG_FETCH_E_TLS);
  CHECK_CONTAINS(r.reason, "certificate");
  CHECK(!exists(dest));
}

TEST(connection_refused) {
  /* A port nobody listens on: bind one, then close it. */
  uv_loop_t l;
  uv_tcp_t t;
  struct sockaddr_in sa;
  uv_loop_init(&l);
  uv_tcp_init(&l, &t);
  uv_ip4_addr("127.0.0.1", 0, &sa);
  REQUIRE(uv_tcp_bind(&t, (struct sockaddr *)&sa, 0) == 0);
  int len = sizeof sa;
  uv_tcp_getsockname(&t, (struct sockaddr *)&sa, &len);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&l, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&l), 0);
  char url[PATH_MAX], dest[PATH_MAX];
  snprintf(url, sizeof url, "https://127.0.0.1:%d/a.bin", ntohs(sa.sin_port));
  dest_path(dest, "refused");
  stg_fetch_options_t o = opts(url, dest);
  o.max_attempts = 2;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, UV_ECONNREFUSED);
  CHECK_EQ_INT(r.failures, 2);
  CHECK_EQ_INT(r.kinds[0], STG_FETCH_E_CONNECT);
  CHECK(r.retried[0]);
}

TEST(write_error) {
  char url[PATH_MAX], dest[PATH_MAX];
  url_of(url, &tls, "a.bin");
  snprintf(dest, sizeof dest, "%s/no/such/dir/file", out);
  stg_fetch_options_t o = opts(url, dest);
  o.max_attempts = 2;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, -ENOENT);
  CHECK_EQ_INT(r.failures, 2);
  CHECK_EQ_INT(r.kinds[0], STG_FETCH_E_WRITE);
  CHECK(r.retried[0]);
  CHECK_CONTAINS(r.reason, "No such file");
}

TEST(plain_http_only_when_allowed) {
  char url[PATH_MAX], dest[PATH_MAX];
  url_of(url, &plain, "a.bin");
  dest_path(dest, "plain");
  clean_dest(dest);
  stg_fetch_options_t o = opts(url, dest);
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), UV_EINVAL); /* refused up front */
  CHECK(!r.done);
  o = opts(url, dest);
  o.allow_http = true;
  o.ca_file = NULL;
  run_t r2 = {0};
  CHECK_EQ_INT(run_fetch(&o, &r2), 0);
  CHECK_EQ_INT(r2.status, 0);
  CHECK(file_is(dest, content, sizeof content));
}

TEST(cancel_mid_transfer) {
  char url[PATH_MAX], dest[PATH_MAX], p[PATH_MAX], v[PATH_MAX];
  url_of(url, &tls, "drip/a.bin");
  dest_path(dest, "cancel");
  clean_dest(dest);
  REQUIRE(write_file(dest, old_content, sizeof old_content - 1) == 0);
  stg_fetch_options_t o = opts(url, dest);
  o.low_speed_limit = 1;
  o.sha256_hex = content_hex;
  run_t r = {0};
  r.cancel_on_progress = true;
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK(r.done && !r.guard_fired);
  CHECK_EQ_INT(r.status, UV_ECANCELED);
  CHECK_EQ_INT(r.failures, 0);
  check_untouched(dest);
  partial_paths(dest, p, v);
  CHECK(exists(p)); /* kept for a later resume */
  clean_dest(dest);
}

TEST(cancel_during_backoff) {
  char url[PATH_MAX], dest[PATH_MAX];
  url_of(url, &tls, "flaky/100/a.bin");
  dest_path(dest, "cancel2");
  clean_dest(dest);
  stg_fetch_options_t o = opts(url, dest);
  o.retry_initial_ms = 60000; /* the test would time out if cancel waited for it */
  o.retry_max_ms = 60000;
  o.max_attempts = 0;
  run_t r = {0};
  r.cancel_on_failure = true;
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK(r.done && !r.guard_fired);
  CHECK_EQ_INT(r.status, UV_ECANCELED);
  CHECK_EQ_INT(r.failures, 1);
  CHECK(r.retried[0] && r.retry_in[0] == 60000);
}

TEST(proxy_from_environment) {
  char url[PATH_MAX], dest[PATH_MAX], proxy[64], want[64];
  dest_path(dest, "proxy");
  clean_dest(dest);
  /* The plain fixture is the proxy: it tunnels to 127.0.0.1, refuses
   * other hosts, and logs every CONNECT. */
  snprintf(proxy, sizeof proxy, "http://127.0.0.1:%d", plain.port);
  setenv("HTTPS_PROXY", proxy, 1);

  snprintf(url, sizeof url, "https://localhost:%d/a.bin", tls.port);
  stg_fetch_options_t o = opts(url, dest);
  o.max_attempts = 1;
  o.sha256_hex = content_hex;
  run_t r = {0};
  CHECK_EQ_INT(run_fetch(&o, &r), 0);
  CHECK_EQ_INT(r.status, UV_ECONNREFUSED);
  CHECK_EQ_INT(r.kinds[0], STG_FETCH_E_CONNECT);
  CHECK_CONTAINS(r.reason, "403");
  snprintf(want, sizeof want, "CONNECT localhost:%d 403", tls.port);
  CHECK(log_has(&plain, want));
  CHECK(!exists(dest));

  /* Through the tunnel, resuming a cut transfer: TLS end to end with the
   * origin, and the proxy's own 200 is not taken for the file's. */
  url_of(url, &tls, "cut/nosum.bin");
  o = opts(url, dest);
  o.sha256_hex = content_hex;
  run_t r2 = {0};
  CHECK_EQ_INT(run_fetch(&o, &r2), 0);
  CHECK_EQ_INT(r2.status, 0);
  CHECK_EQ_INT(r2.failures, 1);
  snprintf(want, sizeof want, "CONNECT 127.0.0.1:%d 200", tls.port);
  CHECK(log_has(&plain, want));
  CHECK(log_has(&tls, "GET /cut/nosum.bin 206"));
  CHECK(file_is(dest, content, sizeof content));
  clean_dest(dest);

  /* NO_PROXY: straight to the server, the proxy sees nothing new. */
  setenv("NO_PROXY", "127.0.0.1", 1);
  size_t before, after;
  free(slurp(plain.log, &before));
  url_of(url, &tls, "a.bin");
  o = opts(url, dest);
  run_t r3 = {0};
  CHECK_EQ_INT(run_fetch(&o, &r3), 0);
  CHECK_EQ_INT(r3.status, 0);
  CHECK(file_is(dest, content, sizeof content));
  free(slurp(plain.log, &after));
  CHECK_EQ_INT(after, before);
  unsetenv("HTTPS_PROXY");
  unsetenv("NO_PROXY");
}

TEST(bad_options) {
  char url[PATH_MAX], dest[PATH_MAX], key[PATH_MAX];
  url_of(url, &tls, "a.bin");
  dest_path(dest, "opts");
  stg_fetch_options_t o = opts(url, dest);
  run_t r = {0};
  o.sha256_hex = "abc";
  CHECK_EQ_INT(run_fetch(&o, &r), UV_EINVAL);
  o = opts("ftp://127.0.0.1/x", dest);
  CHECK_EQ_INT(run_fetch(&o, &r), UV_EINVAL);
  o = opts(url, dest);
  snprintf(key, sizeof key, "%s/nonexistent.pem", certs);
  o.public_key = key;
  CHECK_EQ_INT(run_fetch(&o, &r), UV_ENOENT);
  o = opts(url, dest);
  o.public_key = ca; /* a certificate, not a public key */
  CHECK_EQ_INT(run_fetch(&o, &r), UV_EINVAL);
  o = opts(url, dest);
  path_join(key, tmp, "p384.pub.pem"); /* ECDSA, but not P-256 */
  o.public_key = key;
  CHECK(exists(key));
  CHECK_EQ_INT(run_fetch(&o, &r), UV_EINVAL);
  o = opts(url, dest);
  snprintf(key, sizeof key, "%s/nonexistent-ca.pem", certs);
  o.ca_file = key;
  CHECK_EQ_INT(run_fetch(&o, &r), UV_ENOENT);
  o = opts(url, NULL);
  CHECK_EQ_INT(run_fetch(&o, &r), UV_EINVAL);
  CHECK(!r.done);
}

TEST(error_table) {
  CHECK(!stg_fetch_error_retried(STG_FETCH_E_SIGNATURE));
  CHECK(!stg_fetch_error_retried(STG_FETCH_E_TOO_BIG));
  CHECK(!stg_fetch_error_retried(STG_FETCH_E_INSECURE_REDIRECT));
  CHECK(stg_fetch_error_retried(STG_FETCH_E_CHECKSUM));
  CHECK(stg_fetch_error_retried(STG_FETCH_E_STALLED));
  CHECK(stg_fetch_error_retried(STG_FETCH_E_DNS));
  CHECK_STR(stg_fetch_error_name(STG_FETCH_E_INSECURE_REDIRECT), "insecure-redirect");
  CHECK_STR(stg_fetch_error_name(STG_FETCH_E_STALLED), "stalled");
}

/* --- setup -------------------------------------------------------------------------------- */

static int setup(void) {
  const char *helper = getenv("STG_TEST_HELPER"), *src = getenv("STG_SOURCE_DIR");
  if (helper == NULL || src == NULL) {
    fprintf(stderr, "STG_TEST_HELPER and STG_SOURCE_DIR must be set (run under ctest)\n");
    return -1;
  }
  snprintf(server_bin, sizeof server_bin, "%s", helper);
  char *slash = strrchr(server_bin, '/');
  snprintf(slash + 1, sizeof server_bin - (size_t)(slash + 1 - server_bin), "stg-test-tls-server");
  snprintf(certs, sizeof certs, "%s/test/fixtures/certs", src);
  path_join(ca, certs, "ca.crt");
  path_join(signpub, certs, "sign.pub.pem");
  path_join(otherpub, certs, "other.pub.pem");

  snprintf(tmp, sizeof tmp, "/tmp/stg-fetch-XXXXXX");
  if (mkdtemp(tmp) == NULL)
    return -1;
  path_join(root, tmp, "root");
  path_join(out, tmp, "out");
  if (mkdir(root, 0755) < 0 || mkdir(out, 0755) < 0)
    return -1;

  /* Deterministic pseudo-random content. */
  uint32_t x = 2463534242u;
  for (size_t i = 0; i < sizeof content; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    content[i] = (unsigned char)x;
  }
  hex_of(content, sizeof content, content_hex);
  char p[PATH_MAX], line[128], cmd[4 * PATH_MAX];
  const char *names[] = {"a.bin", "bare.bin", "nosum.bin"};
  for (int i = 0; i < 3; i++) {
    path_join(p, root, names[i]);
    if (write_file(p, content, sizeof content) < 0)
      return -1;
  }
  path_join(p, root, "a.bin.sha256");
  int n = snprintf(line, sizeof line, "%s  a.bin\n", content_hex);
  if (write_file(p, line, (size_t)n) < 0)
    return -1;
  path_join(p, root, "bare.bin.sha256");
  if (write_file(p, content_hex, 64) < 0)
    return -1;
  path_join(p, root, "small.bin");
  if (write_file(p, content, 1536) < 0)
    return -1;
  char small_hex[65];
  hex_of(content, 1536, small_hex);
  path_join(p, root, "small.bin.sha256");
  n = snprintf(line, sizeof line, "%s  small.bin\n", small_hex);
  if (write_file(p, line, (size_t)n) < 0)
    return -1;
  /* The signature, made by openssl: what a release script would do. */
  snprintf(cmd, sizeof cmd, "openssl dgst -sha256 -sign '%s/sign.key' -out '%s/a.bin.sig' '%s/a.bin'",
           certs, root, root);
  if (system(cmd) != 0) {
    fprintf(stderr, "openssl could not sign the test file\n");
    return -1;
  }
  snprintf(cmd, sizeof cmd, "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 "
           "2>/dev/null | openssl pkey -pubout -out '%s/p384.pub.pem'", tmp);
  if (system(cmd) != 0) {
    fprintf(stderr, "openssl could not make a P-384 key\n");
    return -1;
  }

  if (server_start(&tls, "tls.log", NULL) < 0 || server_start(&plain, "plain.log", NULL) < 0 ||
      server_start(&wrong, "wrong.log", "wronghost") < 0) {
    fprintf(stderr, "could not start %s\n", server_bin);
    return -1;
  }
  return 0;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN); /* the caller's duty, see fetch.h */
  const char *proxies[] = {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                           "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"};
  for (size_t i = 0; i < sizeof proxies / sizeof proxies[0]; i++)
    unsetenv(proxies[i]);
  if (setup() < 0) {
    server_stop(&tls);
    server_stop(&plain);
    server_stop(&wrong);
    printf("0 passed, 1 failed\n");
    return 1;
  }
  RUN(error_table);
  RUN(bad_options);
  RUN(ok_with_sha256_file);
  RUN(ok_by_name_localhost);
  RUN(ok_bare_sha256_and_given_digest);
  RUN(not_found_keeps_previous_file);
  RUN(server_error_then_success_with_backoff);
  RUN(cut_then_resume_with_range);
  RUN(truncated_every_time);
  RUN(connection_reset);
  RUN(two_at_once);
  RUN(server_ignores_range_start_over);
  RUN(complete_partial_gets_416_then_start_over);
  RUN(wrong_checksum_retried_then_fails);
  RUN(signature_ok);
  RUN(bad_signature_is_fatal);
  RUN(signature_by_other_key_is_fatal);
  RUN(missing_signature_is_fatal);
  RUN(stall_is_classified);
  RUN(slow_drip_is_stalled);
  RUN(slow_drip_progress);
  RUN(redirects);
  RUN(redirect_to_http_refused);
  RUN(over_the_cap);
  RUN(certificate_for_wrong_host);
  RUN(untrusted_ca);
  RUN(connection_refused);
  RUN(write_error);
  RUN(plain_http_only_when_allowed);
  RUN(cancel_mid_transfer);
  RUN(cancel_during_backoff);
  RUN(proxy_from_environment);
  server_stop(&tls);
  server_stop(&plain);
  server_stop(&wrong);
  if (check_failed_ == 0) {
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
      fprintf(stderr, "could not remove %s\n", tmp);
  } else {
    fprintf(stderr, "kept %s for inspection\n", tmp);
  }
  return CHECK_DONE();
}
