/* lib/agentbin: extraction of the agent-runner payload, the record, the
 * cheap and full checks, pinning, reset, and recovery from a crash between
 * the steps. Each test uses its own STIGMER_HOME and its own payloads. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <mbedtls/sha256.h>
#include <uv.h>

#include "agentbin.h"
#include "check.h"
#include "config.h"

enum { P1_SIZE = 64 * 1024, P2_SIZE = 48 * 1024 };
static unsigned char p1_data[P1_SIZE], p2_data[P2_SIZE];
static char p1_sha[65], p2_sha[65];
static stg_agentbin_payload_t P1, P2, NONE;
static char home[256];
static char bin[512], record[512], bindir[512];
static stg_config_t cfg;

static void hex(const unsigned char *d, size_t n, char out[65]) {
  unsigned char h[32];
  mbedtls_sha256(d, n, h, 0);
  for (int i = 0; i < 32; i++)
    sprintf(out + 2 * i, "%02x", h[i]);
}

static void setup_payloads(void) {
  for (size_t i = 0; i < P1_SIZE; i++)
    p1_data[i] = (unsigned char)(i * 7 + 1);
  for (size_t i = 0; i < P2_SIZE; i++)
    p2_data[i] = (unsigned char)(i * 13 + 5);
  hex(p1_data, P1_SIZE, p1_sha);
  hex(p2_data, P2_SIZE, p2_sha);
  P1 = (stg_agentbin_payload_t){p1_data, P1_SIZE, p1_sha, "reference"};
  P2 = (stg_agentbin_payload_t){p2_data, P2_SIZE, p2_sha, "path"};
  NONE = (stg_agentbin_payload_t){NULL, 0, "", "none"};
}

/* A fresh, empty STIGMER_HOME and config. */
static void fresh_home(void) {
  static int n;
  if (n > 0)
    stg_config_free(&cfg);
  snprintf(home, sizeof home, "/tmp/stg-agentbin.%d.%d", (int)getpid(), n++);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", home, home);
  if (system(cmd) != 0)
    abort();
  if (stg_config_init(&cfg, home) != 0)
    abort();
  snprintf(bin, sizeof bin, "%s/bin/agent-runner", home);
  snprintf(record, sizeof record, "%s/bin/agent-runner.json", home);
  snprintf(bindir, sizeof bindir, "%s/bin", home);
}

static void remove_homes(void) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf /tmp/stg-agentbin.%d.*", (int)getpid());
  if (system(cmd) != 0)
    fprintf(stderr, "cleanup failed\n");
  stg_config_free(&cfg);
}

static int ensure_with(const stg_agentbin_payload_t *pl, unsigned flags,
                       stg_agentbin_state_t *state, char *desc, size_t desclen) {
  stg_agentbin_options_t o = {flags, pl};
  char path[512];
  int rc = stg_agentbin_ensure_ex(&cfg, &o, path, sizeof path, state, desc, desclen);
  if (rc == 0 && *state == STG_AGENTBIN_READY && strcmp(path, bin) != 0 &&
      cfg.agent_runner.path[0] == '\0')
    fprintf(stderr, "unexpected path %s\n", path);
  return rc;
}

/* The file equals the payload. */
static bool file_is(const char *path, const stg_agentbin_payload_t *pl) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return false;
  static unsigned char buf[P1_SIZE + P2_SIZE + 1];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  return n == pl->size && memcmp(buf, pl->data, n) == 0;
}

static json_t *load_record(void) {
  json_error_t e;
  return json_load_file(record, 0, &e);
}

static const char *record_origin(void) {
  static char o[32];
  json_t *j = load_record();
  snprintf(o, sizeof o, "%s", j ? json_string_value(json_object_get(j, "origin")) : "(none)");
  json_decref(j);
  return o;
}

/* Number of temp files ("*.tmp-*") in bin/. */
static int temp_files(void) {
  DIR *d = opendir(bindir);
  if (d == NULL)
    return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strstr(e->d_name, ".tmp-") != NULL)
      n++;
  closedir(d);
  return n;
}

static void flip_byte(const char *path, off_t at) {
  int fd = open(path, O_RDWR);
  unsigned char c;
  if (fd < 0 || pread(fd, &c, 1, at) != 1)
    abort();
  c ^= 0xff;
  if (pwrite(fd, &c, 1, at) != 1)
    abort();
  close(fd);
}

static void set_mtime(const char *path, struct timespec mtime) {
  struct timespec ts[2] = {mtime, mtime};
  if (utimensat(AT_FDCWD, path, ts, 0) != 0)
    abort();
}

/* --- tests -------------------------------------------------------------------------- */

TEST(embedded_payload_hashes_to_its_build_time_sha256) {
  const stg_agentbin_payload_t *p = stg_agentbin_embedded();
  REQUIRE(p != NULL);
  CHECK(strcmp(p->origin, "reference") == 0 || strcmp(p->origin, "path") == 0 ||
        strcmp(p->origin, "none") == 0);
  if (strcmp(p->origin, "none") == 0) {
    CHECK(p->data == NULL);
    CHECK_EQ_INT(p->size, 0);
    return;
  }
  REQUIRE(p->data != NULL);
  CHECK(p->size > 0);
  char h[65];
  hex(p->data, p->size, h);
  CHECK_STR(h, p->sha256);
}

TEST(missing_binary_is_extracted) {
  fresh_home();
  stg_agentbin_state_t st;
  char desc[1024];
  CHECK_EQ_INT(ensure_with(&P1, 0, &st, desc, sizeof desc), 0);
  CHECK_EQ_INT(st, STG_AGENTBIN_READY);
  CHECK_CONTAINS(desc, "extracted the embedded agent-runner (sha256 ");
  CHECK_CONTAINS(desc, "64.0 KiB): binary was missing");
  CHECK(file_is(bin, &P1));
  struct stat s;
  REQUIRE(stat(bin, &s) == 0);
  CHECK_EQ_INT(s.st_mode & 07777, 0755);
  json_t *j = load_record();
  REQUIRE(j != NULL);
  CHECK_STR(json_string_value(json_object_get(j, "origin")), "embedded");
  CHECK_STR(json_string_value(json_object_get(j, "sha256")), p1_sha);
  CHECK_EQ_INT(json_integer_value(json_object_get(j, "size")), P1_SIZE);
  CHECK_EQ_INT(json_integer_value(json_object_get(j, "inode")), s.st_ino);
  CHECK_EQ_INT(json_integer_value(json_object_get(j, "mtime_ns")),
               (long long)s.st_mtim.tv_sec * 1000000000 + s.st_mtim.tv_nsec);
  const char *when = json_string_value(json_object_get(j, "when"));
  CHECK(when != NULL && strlen(when) == 20 && when[10] == 'T' && when[19] == 'Z');
  json_decref(j);
  CHECK_EQ_INT(temp_files(), 0);
}

TEST(matching_record_writes_nothing) {
  fresh_home();
  stg_agentbin_state_t st;
  char desc[1024];
  REQUIRE(ensure_with(&P1, 0, &st, desc, sizeof desc) == 0);
  struct stat b1, r1, b2, r2;
  REQUIRE(stat(bin, &b1) == 0 && stat(record, &r1) == 0);
  /* Both the cheap and the full check: no write. */
  for (unsigned flags = 0; flags <= STG_AGENTBIN_FULL_CHECK; flags += STG_AGENTBIN_FULL_CHECK) {
    CHECK_EQ_INT(ensure_with(&P1, flags, &st, desc, sizeof desc), 0);
    CHECK_EQ_INT(st, STG_AGENTBIN_READY);
    CHECK_CONTAINS(desc, "the embedded agent-runner is in place");
  }
  REQUIRE(stat(bin, &b2) == 0 && stat(record, &r2) == 0);
  CHECK_EQ_INT(b1.st_ino, b2.st_ino);
  CHECK_EQ_INT(r1.st_ino, r2.st_ino);
  CHECK(b1.st_mtim.tv_sec == b2.st_mtim.tv_sec && b1.st_mtim.tv_nsec == b2.st_mtim.tv_nsec);
  CHECK(r1.st_mtim.tv_sec == r2.st_mtim.tv_sec && r1.st_mtim.tv_nsec == r2.st_mtim.tv_nsec);
}

TEST(flipped_byte_is_reextracted_by_the_cheap_check) {
  fresh_home();
  stg_agentbin_state_t st;
  char desc[1024];
  REQUIRE(ensure_with(&P1, 0, &st, desc, sizeof desc) == 0);
  flip_byte(bin, 1000); /* same size; a new mtime and ctime */
  CHECK(!file_is(bin, &P1));
  CHECK_EQ_INT(ensure_with(&P1, 0, &st, desc, sizeof desc), 0);
  CHECK_EQ_INT(st, STG_AGENTBIN_READY);
  CHECK_CONTAINS(desc, "binary changed on disk");
  CHECK(file_is(bin, &P1));
}

TEST(flipped_byte_with_mtime_restored) {
  fresh_home();
  stg_agentbin_state_t st;
  char desc[1024];
  REQUIRE(ensure_with(&P1, 0, &st, desc, sizeof desc) == 0);
  struct stat s0;
  REQUIRE(stat(bin, &s0) == 0);
  /* touch -d: mtime restored, but the ctime moved on, so even the cheap
   * check (size, mtime, ctime, inode) notices and hashes. */
  flip_byte(bin, 2000);
  set_mtime(bin, s0.st_mtim);
  CHECK_EQ_INT(ensure_with(&P1, 0, &st, desc, sizeof desc), 0);
  CHECK_CONTAINS(desc, "binary changed on disk");
  CHECK(file_is(bin, &P1));

  /* A change that keeps size, mtime, ctime and inode (here: a record
   * rewritten to the file's new stats, as a clock jump or a raw disk write
   * could) passes the cheap check: only the full check, which the
   * supervisor does on its own start, catches it. */
  flip_byte(bin, 3000);
  struct stat s1;
  REQUIRE(stat(bin, &s1) == 0);
  json_t *j = load_record();
  REQUIRE(j != NULL);
  json_object_set_new(j, "mtime_ns",
                      json_integer((json_int_t)s1.st_mtim.tv_sec * 1000000000 + s1.st_mtim.tv_nsec));
  json_object_set_new(j, "ctime_ns",
                      json_integer((json_int_t)s1.st_ctim.tv_sec * 1000000000 + s1.st_ctim.tv_nsec));
  REQUIRE(json_dump_file(j, record, 0) == 0);
  json_decref(j);
  CHECK_EQ_INT(ensure_with(&P1, 0, &st, desc, sizeof desc), 0);
  CHECK_CONTAINS(desc, "in place");
  CHECK(!file_is(bin, &P1)); /* the documented limit of the cheap check */
  CHECK_EQ_INT(ensure_with(&P1, STG_AGENTBIN_FULL_CHECK, &st, desc, sizeof desc), 0);
  CHECK_CONTAINS(desc, "binary changed on disk");
  CHECK(file_is(bin, &P1));
}

TEST(changed_payload_reextracts_and_version_does_not_matter) {
  fresh_home();
  stg_agentbin_state_t st;
  char desc[1024];
  REQUIRE(ensure_with(&P1, 0, &st, desc, sizeof desc) == 0);
  /* A different version string in the record: same content, no write. */
  json_t *j = load_record();
  json_object_set_new(j, "version", json_string("0.0.0-dev+gsomethingelse"));
  REQUIRE(json_dump_file(j, record, 0) == 0);
  json_decref(j);
  struct stat b1;
  REQUIRE(stat(bin, &b1) == 0);
  CHECK_EQ_INT(ensure_with(&P1, STG_AGENTBIN_FULL_CHECK, &st, desc, sizeof desc), 0);
  CHECK_CONTAINS(desc, "in place");
  struct stat b2;
  REQUIRE(stat(bin, &b2) == 0);
  CHECK_EQ_INT(b1.st_ino, b2.st_ino);
  /* A new payload: extracted over it. */
  CHECK_EQ_INT(ensure_with(&P2, 0, &st, desc, sizeof desc), 0);
  CHECK_CONTAINS(desc, "the embedded payload changed (was sha256 ");
  CHECK(file_is(bin, &P2));
}

TEST(pinned_install_survives_ensure_and_downloads) {
  fresh_home();
  stg_agentbin_state_t st;
  char desc[1024];
  REQUIRE(ensure_with(&P1, 0, &st, desc, sizeof desc) == 0);
  /* A hand-built binary: P2's bytes in a file. */
  char src[600];
  snprintf(src, sizeof src, "%s/my-agent-runner", home);
  FILE *f = fopen(src, "wb");
  REQUIRE(f != NULL);
  fwrite(p2_data, 1, P2_SIZE, f);
  fclose(f);
  CHECK_EQ_INT(stg_agentbin_install_file(&cfg, src, "installed", "mine-1", NULL, desc, sizeof desc),
               0);
  CHECK_CONTAINS(desc, "pinned");
  CHECK(file_is(bin, &P2));
  CHECK_STR(record_origin(), "installed");
  struct stat b1;
  REQUIRE(stat(bin, &b1) == 0);
  CHECK_EQ_INT(b1.st_mode & 07777, 0755);
  for (unsigned flags = 0; flags <= STG_AGENTBIN_FULL_CHECK; flags += STG_AGENTBIN_FULL_CHECK) {
    CHECK_EQ_INT(ensure_with(&P1, flags, &st, desc, sizeof desc), 0);
    CHECK_EQ_INT(st, STG_AGENTBIN_READY);
    CHECK_CONTAINS(desc, "using the pinned agent-runner");
  }
  struct stat b2;
  REQUIRE(stat(bin, &b2) == 0);
  CHECK_EQ_INT(b1.st_ino, b2.st_ino);
  CHECK(file_is(bin, &P2));
  /* A download does not replace a pinned binary. */
  char src1[600];
  snprintf(src1, sizeof src1, "%s/downloaded", home);
  f = fopen(src1, "wb");
  REQUIRE(f != NULL);
  fwrite(p1_data, 1, P1_SIZE, f);
  fclose(f);
  CHECK_EQ_INT(stg_agentbin_install_file(&cfg, src1, "downloaded", "1.0.0", p1_sha, desc,
                                         sizeof desc),
               UV_EBUSY);
  CHECK_CONTAINS(desc, "pinned");
  CHECK(file_is(bin, &P2));
  /* Deleted while pinned: reported missing, not replaced. */
  REQUIRE(unlink(bin) == 0);
  CHECK_EQ_INT(ensure_with(&P1, 0, &st, desc, sizeof desc), 0);
  CHECK_EQ_INT(st, STG_AGENTBIN_MISSING);
  CHECK_CONTAINS(desc, "pinned agent-runner");
  CHECK_CONTAINS(desc, "is missing");
  CHECK(access(bin, F_OK) != 0);
}

TEST(reset_unpins_and_reextracts) {
  fresh_home();
  char src[600], desc[2048];
  snprintf(src, sizeof src, "%s/mine", home);
  FILE *f = fopen(src, "wb");
  REQUIRE(f != NULL);
  fwrite(p2_data, 1, P2_SIZE, f);
  fclose(f);
  REQUIRE(stg_agentbin_install_file(&cfg, src, "installed", NULL, NULL, desc, sizeof desc) == 0);
  stg_agentbin_options_t o = {0, &P1};
  stg_agentbin_state_t st;
  CHECK_EQ_INT(stg_agentbin_reset(&cfg, &o, &st, desc, sizeof desc), 0);
  CHECK_EQ_INT(st, STG_AGENTBIN_READY);
  CHECK_CONTAINS(desc, "unpinned");
  CHECK_CONTAINS(desc, "extracted the embedded agent-runner");
  CHECK(file_is(bin, &P1));
  CHECK_STR(record_origin(), "embedded");
  /* Nothing embedded: reset leaves nothing, for a fetch. */
  REQUIRE(stg_agentbin_install_file(&cfg, src, "installed", NULL, NULL, desc, sizeof desc) == 0);
  o.payload = &NONE;
  CHECK_EQ_INT(stg_agentbin_reset(&cfg, &o, &st, desc, sizeof desc), 0);
  CHECK_EQ_INT(st, STG_AGENTBIN_MISSING);
  CHECK_CONTAINS(desc, "needs a fetch");
  CHECK(access(bin, F_OK) != 0);
  CHECK(access(record, F_OK) != 0);
}

TEST(failed_write_leaves_the_old_binary_and_no_temp_file) {
  fresh_home();
  stg_agentbin_state_t st;
  char desc[1024];
  REQUIRE(ensure_with(&P2, 0, &st, desc, sizeof desc) == 0);
  /* Writing P1 (64 KiB) fails half way: EFBIG past a 16 KiB file size limit. */
  struct rlimit old, lim;
  REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
  lim = old;
  lim.rlim_cur = 16 * 1024;
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
  int rc = ensure_with(&P1, 0, &st, desc, sizeof desc);
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, prev);
  CHECK_EQ_INT(rc, UV_EFBIG);
  CHECK_CONTAINS(desc, "write ");
  CHECK_CONTAINS(desc, "/bin/.agent-runner.tmp-");
  CHECK(file_is(bin, &P2)); /* the old binary, whole */
  CHECK_STR(record_origin(), "embedded");
  CHECK_EQ_INT(temp_files(), 0);
  /* And the next try succeeds. */
  CHECK_EQ_INT(ensure_with(&P1, 0, &st, desc, sizeof desc), 0);
  CHECK(file_is(bin, &P1));
}

TEST(crash_between_steps_recovers) {
  fresh_home();
  stg_agentbin_state_t st;
  char desc[1024];
  REQUIRE(ensure_with(&P1, 0, &st, desc, sizeof desc) == 0);
  /* Crashed after renaming the binary, before the record: a stray temp
   * file of the record and no record. */
  char stray[600];
  snprintf(stray, sizeof stray, "%s/.agent-runner.json.tmp-AbC123", bindir);
  FILE *f = fopen(stray, "w");
  REQUIRE(f != NULL);
  fputs("{\"origin\": \"emb", f);
  fclose(f);
  REQUIRE(unlink(record) == 0);
  struct stat b1;
  REQUIRE(stat(bin, &b1) == 0);
  CHECK_EQ_INT(ensure_with(&P1, 0, &st, desc, sizeof desc), 0);
  CHECK_EQ_INT(st, STG_AGENTBIN_READY);
  CHECK_CONTAINS(desc, "matches the embedded payload");
  CHECK_CONTAINS(desc, "record was missing");
  CHECK_EQ_INT(temp_files(), 0);
  struct stat b2;
  REQUIRE(stat(bin, &b2) == 0);
  CHECK_EQ_INT(b1.st_ino, b2.st_ino); /* the binary was not rewritten */
  CHECK_STR(record_origin(), "embedded");
  CHECK_EQ_INT(ensure_with(&P1, 0, &st, desc, sizeof desc), 0);
  CHECK_CONTAINS(desc, "in place");

  /* Crashed while writing the binary: a torn temp file, the old binary
   * gone (deleted by hand), the record of the old one. */
  snprintf(stray, sizeof stray, "%s/.agent-runner.tmp-XyZ789", bindir);
  f = fopen(stray, "w");
  REQUIRE(f != NULL);
  fwrite(p1_data, 1, 100, f);
  fclose(f);
  REQUIRE(unlink(bin) == 0);
  CHECK_EQ_INT(ensure_with(&P1, 0, &st, desc, sizeof desc), 0);
  CHECK_CONTAINS(desc, "binary was missing");
  CHECK(file_is(bin, &P1));
  CHECK_EQ_INT(temp_files(), 0);
}

TEST(corrupt_record_is_replaced) {
  fresh_home();
  stg_agentbin_state_t st;
  char desc[1024];
  REQUIRE(ensure_with(&P1, 0, &st, desc, sizeof desc) == 0);
  flip_byte(bin, 10);
  FILE *f = fopen(record, "w");
  REQUIRE(f != NULL);
  fputs("{not json", f);
  fclose(f);
  CHECK_EQ_INT(ensure_with(&P1, 0, &st, desc, sizeof desc), 0);
  CHECK_CONTAINS(desc, "record unreadable");
  CHECK(file_is(bin, &P1));
  CHECK_STR(record_origin(), "embedded");
}

TEST(configured_path_is_used_as_is) {
  fresh_home();
  char err[256], desc[1024], path[600], want[600];
  snprintf(want, sizeof want, "%s/elsewhere/agent-runner", home);
  REQUIRE(stg_config_set(&cfg, "agent-runner.path", want, err, sizeof err) == 0);
  stg_agentbin_state_t st;
  stg_agentbin_options_t o = {STG_AGENTBIN_FULL_CHECK, &P1};
  CHECK_EQ_INT(stg_agentbin_ensure_ex(&cfg, &o, path, sizeof path, &st, desc, sizeof desc), 0);
  CHECK_EQ_INT(st, STG_AGENTBIN_MISSING);
  CHECK_STR(path, want);
  CHECK_CONTAINS(desc, "configured [agent-runner] path");
  CHECK_CONTAINS(desc, "no such file or directory");
  CHECK(access(want, F_OK) != 0); /* never extracted there */
  CHECK(access(bin, F_OK) != 0);
  char dir[600];
  snprintf(dir, sizeof dir, "%s/elsewhere", home);
  REQUIRE(mkdir(dir, 0755) == 0);
  FILE *f = fopen(want, "w");
  REQUIRE(f != NULL);
  fputs("#!/bin/sh\n", f);
  fclose(f);
  REQUIRE(chmod(want, 0755) == 0);
  CHECK_EQ_INT(stg_agentbin_ensure_ex(&cfg, &o, path, sizeof path, &st, desc, sizeof desc), 0);
  CHECK_EQ_INT(st, STG_AGENTBIN_READY);
  CHECK_CONTAINS(desc, "using the configured [agent-runner] path");
  CHECK_EQ_INT(stg_agentbin_install_file(&cfg, want, "installed", NULL, NULL, desc, sizeof desc),
               UV_EPERM);
  char p2[600];
  CHECK_EQ_INT(stg_agentbin_path(&cfg, p2, sizeof p2), 0);
  CHECK_STR(p2, want);
}

TEST(nothing_embedded_needs_a_fetch_until_downloaded) {
  fresh_home();
  stg_agentbin_state_t st;
  char desc[1024];
  CHECK_EQ_INT(ensure_with(&NONE, 0, &st, desc, sizeof desc), 0);
  CHECK_EQ_INT(st, STG_AGENTBIN_MISSING);
  CHECK_CONTAINS(desc, "no agent-runner is embedded");
  CHECK_CONTAINS(desc, "needs a fetch");
  /* A download with the wrong digest is refused, nothing replaced. */
  char src[600];
  snprintf(src, sizeof src, "%s/agent-runner.partial", home);
  FILE *f = fopen(src, "wb");
  REQUIRE(f != NULL);
  fwrite(p1_data, 1, P1_SIZE, f);
  fclose(f);
  CHECK_EQ_INT(stg_agentbin_install_file(&cfg, src, "downloaded", "1.2.3", p2_sha, desc,
                                         sizeof desc),
               UV_EINVAL);
  CHECK_CONTAINS(desc, "expected");
  CHECK(access(bin, F_OK) != 0);
  CHECK_EQ_INT(temp_files(), 0);
  /* The right one. */
  CHECK_EQ_INT(stg_agentbin_install_file(&cfg, src, "downloaded", "1.2.3", p1_sha, desc,
                                         sizeof desc),
               0);
  CHECK_STR(record_origin(), "downloaded");
  char err[256];
  REQUIRE(stg_config_set(&cfg, "agent-runner.version", "1.2.3", err, sizeof err) == 0);
  CHECK_EQ_INT(ensure_with(&NONE, 0, &st, desc, sizeof desc), 0);
  CHECK_EQ_INT(st, STG_AGENTBIN_READY);
  CHECK_CONTAINS(desc, "using the downloaded agent-runner (version 1.2.3");
  /* Another version wanted: the download no longer fits. */
  REQUIRE(stg_config_set(&cfg, "agent-runner.version", "1.2.4", err, sizeof err) == 0);
  CHECK_EQ_INT(ensure_with(&NONE, 0, &st, desc, sizeof desc), 0);
  CHECK_EQ_INT(st, STG_AGENTBIN_MISSING);
  CHECK_CONTAINS(desc, "version 1.2.3, this stigmer wants 1.2.4");
  REQUIRE(stg_config_set(&cfg, "agent-runner.version", "1.2.3", err, sizeof err) == 0);
  /* Corrupted: needs a fetch again. */
  flip_byte(bin, 5);
  CHECK_EQ_INT(ensure_with(&NONE, 0, &st, desc, sizeof desc), 0);
  CHECK_EQ_INT(st, STG_AGENTBIN_MISSING);
  CHECK_CONTAINS(desc, "changed since it was recorded");
  /* With a payload, the embedded one replaces a download. */
  CHECK_EQ_INT(ensure_with(&P1, 0, &st, desc, sizeof desc), 0);
  CHECK_EQ_INT(st, STG_AGENTBIN_READY);
  CHECK_CONTAINS(desc, "extracted");
  CHECK_STR(record_origin(), "embedded");
}

TEST(status_reports_without_writing) {
  fresh_home();
  stg_agentbin_options_t o = {0, &P1};
  stg_agentbin_status_t *s = malloc(sizeof *s);
  REQUIRE(s != NULL);
  CHECK_EQ_INT(stg_agentbin_status(&cfg, &o, s), 0);
  CHECK(!s->exists);
  CHECK(!s->have_record);
  CHECK(s->would_write);
  CHECK_EQ_INT(s->state, STG_AGENTBIN_READY);
  CHECK_CONTAINS(s->plan, "binary was missing");
  CHECK(access(bin, F_OK) != 0);
  stg_agentbin_state_t st;
  char desc[1024];
  REQUIRE(ensure_with(&P1, 0, &st, desc, sizeof desc) == 0);
  CHECK_EQ_INT(stg_agentbin_status(&cfg, &o, s), 0);
  CHECK(s->exists && s->have_record && s->matches_record && !s->would_write && !s->pinned);
  CHECK_STR(s->sha256, p1_sha);
  CHECK_STR(s->record.origin, "embedded");
  free(s);
}

int main(void) {
  setup_payloads();
  RUN(embedded_payload_hashes_to_its_build_time_sha256);
  RUN(missing_binary_is_extracted);
  RUN(matching_record_writes_nothing);
  RUN(flipped_byte_is_reextracted_by_the_cheap_check);
  RUN(flipped_byte_with_mtime_restored);
  RUN(changed_payload_reextracts_and_version_does_not_matter);
  RUN(pinned_install_survives_ensure_and_downloads);
  RUN(reset_unpins_and_reextracts);
  RUN(failed_write_leaves_the_old_binary_and_no_temp_file);
  RUN(crash_between_steps_recovers);
  RUN(corrupt_record_is_replaced);
  RUN(configured_path_is_used_as_is);
  RUN(nothing_embedded_needs_a_fetch_until_downloaded);
  RUN(status_reports_without_writing);
  remove_homes();
  return CHECK_DONE();
}
