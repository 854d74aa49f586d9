/* lib/agentfetch: which version and URL, refusals (development build,
 * configured path, pinned), the cache and its sidecar, the progress text.
 * The download itself is covered by test_fetch and the e2e test
 * test_agent_runner_fetch.sh. Each test uses its own STIGMER_HOME. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "agentbin.h"
#include "agentfetch.h"
#include "check.h"
#include "config.h"
#include "version.h"

static char home[256];
static stg_config_t cfg;

static void fresh_home(void) {
  static int n;
  if (n > 0)
    stg_config_free(&cfg);
  snprintf(home, sizeof home, "/tmp/stg-agentfetch.%d.%d", (int)getpid(), n++);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", home, home);
  if (system(cmd) != 0)
    abort();
  if (stg_config_init(&cfg, home) != 0)
    abort();
}

static void set(const char *key, const char *value) {
  char err[512];
  if (stg_config_set(&cfg, key, value, err, sizeof err) != 0) {
    fprintf(stderr, "set %s: %s\n", key, err);
    abort();
  }
}

static void write_file(const char *path, const char *data) {
  FILE *f = fopen(path, "w");
  if (f == NULL)
    abort();
  fputs(data, f);
  fclose(f);
}

/* Puts a verified "download" of version v with content data in the cache. */
static void cache_put(const stg_agentfetch_plan_t *p, const char *data, char sha[65]) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", p->dir);
  if (system(cmd) != 0)
    abort();
  write_file(p->file, data);
  chmod(p->file, 0755);
  uint64_t size;
  if (stg_agentbin_sha256_file(p->file, sha, &size) != 0)
    abort();
  char line[128];
  snprintf(line, sizeof line, "%s  agent-runner\n", sha);
  write_file(p->sidecar, line);
}

TEST(plan_expands_the_template) {
  fresh_home();
  set("agent-runner.version", "1.2.3");
  set("agent-runner.url", "https://mirror.example/x/{version}/ar-{version}-{os}-{arch}.bin");
  stg_agentfetch_plan_t p;
  char why[1024];
  REQUIRE(stg_agentfetch_plan(&cfg, &p, why, sizeof why) == 0);
  char want[512];
  snprintf(want, sizeof want, "https://mirror.example/x/1.2.3/ar-1.2.3-%s-%s.bin",
           stg_version_os(), stg_version_arch());
  CHECK_STR(p.url, want);
  CHECK_STR(p.version, "1.2.3");
  char dir[512];
  snprintf(dir, sizeof dir, "%s/cache/agent-runner/1.2.3", home);
  CHECK_STR(p.dir, dir);
  CHECK_CONTAINS(p.file, "/cache/agent-runner/1.2.3/agent-runner");
  CHECK_CONTAINS(p.sidecar, "/cache/agent-runner/1.2.3/agent-runner.sha256");
}

TEST(plan_refuses) {
  fresh_home();
  stg_agentfetch_plan_t p;
  char why[1024];
  set("agent-runner.version", "1.2.3");
  set("agent-runner.url", "https://x/{version}/{flavour}");
  CHECK_EQ_INT(stg_agentfetch_plan(&cfg, &p, why, sizeof why), UV_EINVAL);
  CHECK_CONTAINS(why, "{flavour}");
  set("agent-runner.url", "https://x/{version}");
  set("agent-runner.version", "../../etc");
  CHECK_EQ_INT(stg_agentfetch_plan(&cfg, &p, why, sizeof why), UV_EINVAL);
  set("agent-runner.version", "..");
  CHECK_EQ_INT(stg_agentfetch_plan(&cfg, &p, why, sizeof why), UV_EINVAL);
  set("agent-runner.version", "1.2.3");
  set("agent-runner.path", "/opt/agent-runner");
  CHECK_EQ_INT(stg_agentfetch_plan(&cfg, &p, why, sizeof why), UV_EPERM);
  CHECK_CONTAINS(why, "[agent-runner] path");
}

TEST(development_build_needs_a_version) {
  fresh_home();
  stg_agentfetch_plan_t p;
  char why[1024];
  int rc = stg_agentfetch_plan(&cfg, &p, why, sizeof why);
  if (stg_version_is_release()) {
    CHECK_EQ_INT(rc, 0);
    CHECK_STR(p.version, stg_version());
    return;
  }
  CHECK_EQ_INT(rc, UV_ENOTSUP);
  CHECK_CONTAINS(why, "development build");
  CHECK_CONTAINS(why, stg_version());
  CHECK_CONTAINS(why, "stigmer agent-runner install PATH");
  CHECK_CONTAINS(why, "make install-agent-runner");
  CHECK_CONTAINS(why, "[agent-runner] version");
}

TEST(pinned_is_not_fetched_over) {
  fresh_home();
  set("agent-runner.version", "1.2.3");
  char src[512], desc[1024];
  snprintf(src, sizeof src, "%s/mine", home);
  write_file(src, "#!/bin/sh\nexit 0\n");
  REQUIRE(stg_agentbin_install_file(&cfg, src, "installed", "mine", NULL, desc,
                                    sizeof desc) == 0);
  stg_agentfetch_plan_t p;
  char why[1024];
  CHECK_EQ_INT(stg_agentfetch_plan(&cfg, &p, why, sizeof why), UV_EBUSY);
  CHECK_CONTAINS(why, "pinned");
}

TEST(install_from_the_cache) {
  fresh_home();
  set("agent-runner.version", "2.0.0");
  stg_agentfetch_plan_t p;
  char why[1024], desc[1024];
  REQUIRE(stg_agentfetch_plan(&cfg, &p, why, sizeof why) == 0);
  CHECK_EQ_INT(stg_agentfetch_install_cached(&cfg, &p, desc, sizeof desc), 1);
  CHECK_CONTAINS(desc, "not in the cache");

  char sha[65];
  cache_put(&p, "#!/bin/sh\necho two\n", sha);
  REQUIRE(stg_agentfetch_install_cached(&cfg, &p, desc, sizeof desc) == 0);
  CHECK_CONTAINS(desc, "from the cache");
  stg_agentbin_status_t *st = malloc(sizeof *st);
  REQUIRE(st != NULL);
  REQUIRE(stg_agentbin_status(&cfg, NULL, st) == 0);
  CHECK(st->have_record);
  CHECK_STR(st->record.origin, "downloaded");
  CHECK_STR(st->record.version, "2.0.0");
  CHECK_STR(st->record.sha256, sha);
  CHECK_STR(st->sha256, sha);
  free(st);
}

TEST(cache_is_verified) {
  fresh_home();
  set("agent-runner.version", "3.0.0");
  stg_agentfetch_plan_t p;
  char why[1024], desc[1024], sha[65];
  REQUIRE(stg_agentfetch_plan(&cfg, &p, why, sizeof why) == 0);
  cache_put(&p, "#!/bin/sh\necho three\n", sha);

  /* Changed after it was verified: not installed. */
  write_file(p.file, "#!/bin/sh\necho evil\n");
  CHECK_EQ_INT(stg_agentfetch_install_cached(&cfg, &p, desc, sizeof desc), 1);
  CHECK_CONTAINS(desc, "changed since it was verified");
  char bin[512];
  snprintf(bin, sizeof bin, "%s/bin/agent-runner", home);
  CHECK(access(bin, F_OK) != 0);

  /* No sidecar (a crash before it was written): not trusted. */
  cache_put(&p, "#!/bin/sh\necho three\n", sha);
  unlink(p.sidecar);
  CHECK_EQ_INT(stg_agentfetch_install_cached(&cfg, &p, desc, sizeof desc), 1);
  CHECK_CONTAINS(desc, "no verified digest");

  /* A garbled sidecar. */
  write_file(p.sidecar, "not a digest\n");
  CHECK_EQ_INT(stg_agentfetch_install_cached(&cfg, &p, desc, sizeof desc), 1);

  /* [agent-runner] sha256 pins another digest. */
  cache_put(&p, "#!/bin/sh\necho three\n", sha);
  set("agent-runner.sha256", "00000000000000000000000000000000000000000000000000000000000000aa");
  CHECK_EQ_INT(stg_agentfetch_install_cached(&cfg, &p, desc, sizeof desc), 1);
  CHECK_CONTAINS(desc, "pins");
  /* ... or this one (in upper case). */
  char upper[65];
  for (int i = 0; i < 65; i++)
    upper[i] = (char)(sha[i] >= 'a' && sha[i] <= 'f' ? sha[i] - 'a' + 'A' : sha[i]);
  set("agent-runner.sha256", upper);
  CHECK_EQ_INT(stg_agentfetch_install_cached(&cfg, &p, desc, sizeof desc), 0);
  CHECK(access(bin, X_OK) == 0);
}

TEST(cache_and_public_key) {
  fresh_home();
  set("agent-runner.version", "4.0.0");
  stg_agentfetch_plan_t p;
  char why[1024], desc[1024], sha[65], keysha[65];
  REQUIRE(stg_agentfetch_plan(&cfg, &p, why, sizeof why) == 0);
  cache_put(&p, "#!/bin/sh\necho four\n", sha);
  char key[512];
  snprintf(key, sizeof key, "%s/key.pem", home);
  write_file(key, "-----BEGIN PUBLIC KEY-----\nnot checked here\n-----END PUBLIC KEY-----\n");
  REQUIRE(stg_agentbin_sha256_file(key, keysha, NULL) == 0);
  set("agent-runner.public_key", key);
  /* Verified without a signature check: not good enough now. */
  CHECK_EQ_INT(stg_agentfetch_install_cached(&cfg, &p, desc, sizeof desc), 1);
  CHECK_CONTAINS(desc, "public_key");
  /* Checked with another key. */
  char line[256];
  snprintf(line, sizeof line, "%s  agent-runner\nkey %s\n", sha,
           "1111111111111111111111111111111111111111111111111111111111111111");
  write_file(p.sidecar, line);
  CHECK_EQ_INT(stg_agentfetch_install_cached(&cfg, &p, desc, sizeof desc), 1);
  /* Checked with this key. */
  snprintf(line, sizeof line, "%s  agent-runner\nkey %s\n", sha, keysha);
  write_file(p.sidecar, line);
  CHECK_EQ_INT(stg_agentfetch_install_cached(&cfg, &p, desc, sizeof desc), 0);
}

static void collect(const char *version, uint64_t size, const char *sha256, uint64_t partial,
                    void *arg) {
  char *out = arg;
  char line[256];
  snprintf(line, sizeof line, "%s %llu %s %llu;", version, (unsigned long long)size,
           sha256[0] ? "verified" : "-", (unsigned long long)partial);
  strcat(out, line);
}

TEST(cache_list) {
  fresh_home();
  char out[4096] = "";
  CHECK_EQ_INT(stg_agentfetch_cache_list(&cfg, collect, out), 0);
  CHECK_STR(out, "");
  stg_agentfetch_plan_t p;
  char why[1024], sha[65];
  set("agent-runner.version", "1.1.0");
  REQUIRE(stg_agentfetch_plan(&cfg, &p, why, sizeof why) == 0);
  cache_put(&p, "12345", sha);
  set("agent-runner.version", "1.0.0");
  REQUIRE(stg_agentfetch_plan(&cfg, &p, why, sizeof why) == 0);
  char cmd[9000];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s' && printf abc > '%s.partial'", p.dir, p.file);
  REQUIRE(system(cmd) == 0);
  CHECK_EQ_INT(stg_agentfetch_cache_list(&cfg, collect, out), 0);
  CHECK_STR(out, "1.0.0 0 - 3;1.1.0 5 verified 0;");
}

TEST(progress_text) {
  char buf[128];
  stg_agentfetch_format_progress(512, 1024, 100.0, buf, sizeof buf);
  CHECK_STR(buf, "512 B / 1.0 KiB (50%), 100 B/s");
  stg_agentfetch_format_progress(2048, 0, 0, buf, sizeof buf);
  CHECK_STR(buf, "2.0 KiB, 0 B/s");
}

int main(void) {
  RUN(plan_expands_the_template);
  RUN(plan_refuses);
  RUN(development_build_needs_a_version);
  RUN(pinned_is_not_fetched_over);
  RUN(install_from_the_cache);
  RUN(cache_is_verified);
  RUN(cache_and_public_key);
  RUN(cache_list);
  RUN(progress_text);
  stg_config_free(&cfg);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf /tmp/stg-agentfetch.%d.*", (int)getpid());
  if (system(cmd) != 0)
    fprintf(stderr, "cleanup failed\n");
  return CHECK_DONE();
}
