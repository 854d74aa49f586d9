/* Configuration: defaults, the file, the environment, flags, and every
 * error path naming the file, line, key and what was expected. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "check.h"
#include "config.h"
#include "log.h"

static char home[256];
static char logpath[300];

static void write_config(const char *text) {
  char p[400];
  snprintf(p, sizeof p, "%s/config.ini", home);
  FILE *f = fopen(p, "w");
  fputs(text, f);
  fclose(f);
}

static void remove_config(void) {
  char p[400];
  snprintf(p, sizeof p, "%s/config.ini", home);
  unlink(p);
}

/* Loads the current file; returns rc, err in err. */
static int load(stg_config_t *cfg, char *err, size_t len) {
  if (stg_config_init(cfg, home) != 0)
    return -9999;
  return stg_config_load(cfg, err, len);
}

static char *read_log(void) {
  static char buf[8192];
  FILE *f = fopen(logpath, "r");
  size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
  buf[n] = '\0';
  if (f)
    fclose(f);
  truncate(logpath, 0);
  return buf;
}

TEST(missing_file_means_defaults) {
  remove_config();
  stg_config_t cfg;
  char err[512];
  CHECK_EQ_INT(load(&cfg, err, sizeof err), 0);
  CHECK(!cfg.file_found);
  CHECK_EQ_INT(cfg.supervisor.stop_timeout_ms, 10000);
  CHECK_EQ_INT(cfg.restart.backoff_initial_ms, 100);
  CHECK_EQ_INT(cfg.restart.max_restarts, 10);
  CHECK_EQ_INT(cfg.logs.max_size, 10 << 20);
  CHECK_STR(cfg.server.listen, "127.0.0.1:7234");
  CHECK_EQ_INT(cfg.component[STG_COMP_SERVER].stop_timeout_ms, 10000);
  CHECK(cfg.component[STG_COMP_AGENT_RUNNER].notify);
  stg_config_free(&cfg);
}

TEST(file_values_and_inheritance) {
  write_config("; comment\n"
               "[supervisor]\n"
               "stop_timeout = 3s\n"
               "[restart]\n"
               "max_restarts = 4\n"
               "[component.server]\n"
               "stop_timeout = 500ms\n"
               "notify = no\n"
               "env.FOO = bar baz\n"
               "[logs]\n"
               "max_size = 512KiB\n");
  stg_config_t cfg;
  char err[512];
  CHECK_EQ_INT(load(&cfg, err, sizeof err), 0);
  CHECK(cfg.file_found);
  CHECK_EQ_INT(cfg.supervisor.stop_timeout_ms, 3000);
  CHECK_EQ_INT(cfg.component[STG_COMP_SERVER].stop_timeout_ms, 500);
  CHECK_EQ_INT(cfg.component[STG_COMP_WORKFLOW_RUNNER].stop_timeout_ms, 3000);
  CHECK_EQ_INT(cfg.component[STG_COMP_AGENT_RUNNER].max_restarts, 4);
  CHECK(!cfg.component[STG_COMP_SERVER].notify);
  CHECK_EQ_INT(cfg.component[STG_COMP_SERVER].n_env, 1);
  CHECK_STR(cfg.component[STG_COMP_SERVER].env[0], "FOO=bar baz");
  CHECK_EQ_INT(cfg.logs.max_size, 512 * 1024);
  char *json = stg_config_show_json(&cfg);
  CHECK_CONTAINS(json, "config.ini:3");
  CHECK_CONTAINS(json, "from [restart]");
  free(json);
  stg_config_free(&cfg);
}

static void expect_error(const char *text, const char *needle1, const char *needle2) {
  write_config(text);
  stg_config_t cfg;
  char err[1024];
  int rc = load(&cfg, err, sizeof err);
  CHECK(rc == UV_EINVAL || rc == UV_ERANGE);
  CHECK_CONTAINS(err, home);
  CHECK_CONTAINS(err, needle1);
  CHECK_CONTAINS(err, needle2);
  stg_config_free(&cfg);
}

TEST(every_bad_value_names_file_line_key_and_expectation) {
  expect_error("[supervisor]\nstop_timeout = 5 parsecs\n", "config.ini:2:",
               "stop_timeout: expected a duration");
  expect_error("\n\n[logs]\nmax_size = 10MB\n", "config.ini:4:", "max_size: expected a size");
  expect_error("[logs]\nkeep = 0\n", "config.ini:2:", "keep: expected a whole number from 1");
  expect_error("[restart]\nmax_restarts = ten\n", "config.ini:2:", "max_restarts");
  expect_error("[agent-runner]\nallow_http = maybe\n", "config.ini:2:", "expected yes or no");
  expect_error("[agent-runner]\nprovider = gemini\n", "config.ini:2:",
               "expected one of ollama,openai");
  expect_error("[server]\nlisten = nowhere\n", "config.ini:2:", "expected host:port");
  expect_error("[server]\nlisten = 127.0.0.1:99999\n", "config.ini:2:", "listen");
  expect_error("[log]\nlevel = loud\n", "config.ini:2:", "expected one of error");
  expect_error("[component.server]\nwatchdog = forever\n", "config.ini:2:",
               "[component.server] watchdog");
  expect_error("[component.server]\nenv.BAD-NAME = 1\n", "config.ini:2:", "env.NAME");
  expect_error("[supervisor\nsettle = 1s\n", "config.ini:1:", "syntax error");
  expect_error("[supervisor]\njust words\n", "config.ini:2:", "syntax error");
}

TEST(first_error_wins) {
  expect_error("[supervisor]\nsettle = x\nstop_timeout = y\n", "config.ini:2:", "settle");
}

TEST(over_long_line_is_an_error_with_its_line) {
  char text[1024];
  int n = snprintf(text, sizeof text, "[agent-runner]\nurl = https://");
  memset(text + n, 'a', 400);
  strcpy(text + n + 400, "\n");
  expect_error(text, "config.ini:2:", "line longer than");
}

TEST(unknown_sections_and_keys_are_warnings) {
  write_config("[nonsense]\na = 1\n[supervisor]\nfrobs = 2\n"
               "[component.nope]\nnotify = no\n[restart]\nstop_timeout = 1s\n");
  stg_config_t cfg;
  char err[512];
  CHECK_EQ_INT(load(&cfg, err, sizeof err), 0);
  char *log = read_log();
  CHECK_CONTAINS(log, "config.ini:2: unknown section [nonsense]");
  CHECK_CONTAINS(log, "config.ini:4: unknown key 'frobs' in [supervisor]");
  CHECK_CONTAINS(log, "config.ini:6: unknown component");
  CHECK_CONTAINS(log, "config.ini:8: unknown key 'stop_timeout' in [restart] (it belongs in [supervisor])");
  stg_config_free(&cfg);
}

TEST(environment_overrides_file_and_flags_override_both) {
  write_config("[supervisor]\nstop_timeout = 3s\nsettle = 2s\n");
  setenv("STIGMER_SUPERVISOR_STOP_TIMEOUT", "4s", 1);
  setenv("STIGMER_COMPONENT_AGENT_RUNNER_NOTIFY", "no", 1);
  setenv("STIGMER_AGENT_RUNNER_MODEL", "llama3", 1);
  stg_config_t cfg;
  char err[512];
  CHECK_EQ_INT(load(&cfg, err, sizeof err), 0);
  CHECK_EQ_INT(cfg.supervisor.stop_timeout_ms, 4000);
  CHECK_EQ_INT(cfg.supervisor.settle_ms, 2000);
  CHECK(!cfg.component[STG_COMP_AGENT_RUNNER].notify);
  CHECK_STR(cfg.agent_runner.model, "llama3");
  CHECK_EQ_INT(stg_config_set(&cfg, "supervisor.stop_timeout", "6s", err, sizeof err), 0);
  CHECK_EQ_INT(cfg.supervisor.stop_timeout_ms, 6000);
  CHECK_EQ_INT(cfg.component[STG_COMP_SERVER].stop_timeout_ms, 6000);
  CHECK_EQ_INT(stg_config_set(&cfg, "component.server.env.X", "1", err, sizeof err), 0);
  CHECK_STR(cfg.component[STG_COMP_SERVER].env[0], "X=1");
  char *json = stg_config_show_json(&cfg);
  CHECK_CONTAINS(json, "env STIGMER_COMPONENT_AGENT_RUNNER_NOTIFY");
  CHECK_CONTAINS(json, "\"flag\"");
  free(json);
  stg_config_free(&cfg);
  unsetenv("STIGMER_COMPONENT_AGENT_RUNNER_NOTIFY");
  unsetenv("STIGMER_AGENT_RUNNER_MODEL");
  setenv("STIGMER_SUPERVISOR_STOP_TIMEOUT", "soon", 1);
  CHECK_EQ_INT(load(&cfg, err, sizeof err), UV_EINVAL);
  CHECK_CONTAINS(err, "environment STIGMER_SUPERVISOR_STOP_TIMEOUT");
  CHECK_CONTAINS(err, "expected a duration");
  stg_config_free(&cfg);
  unsetenv("STIGMER_SUPERVISOR_STOP_TIMEOUT");
}

TEST(set_errors) {
  remove_config();
  stg_config_t cfg;
  char err[512];
  CHECK_EQ_INT(load(&cfg, err, sizeof err), 0);
  CHECK(stg_config_set(&cfg, "nokey", "1", err, sizeof err) == UV_EINVAL);
  CHECK_CONTAINS(err, "expected section.key");
  CHECK(stg_config_set(&cfg, "bogus.key", "1", err, sizeof err) == UV_EINVAL);
  CHECK_CONTAINS(err, "unknown section");
  CHECK(stg_config_set(&cfg, "supervisor.bogus", "1", err, sizeof err) == UV_EINVAL);
  CHECK_CONTAINS(err, "unknown key");
  CHECK(stg_config_set(&cfg, "supervisor.settle", "1x", err, sizeof err) == UV_EINVAL);
  CHECK_CONTAINS(err, "--set supervisor.settle");
  CHECK(stg_config_set(&cfg, "component.server", "1", err, sizeof err) == UV_EINVAL);
  stg_config_free(&cfg);
}

TEST(not_a_regular_file) {
  remove_config();
  char p[400];
  snprintf(p, sizeof p, "%s/config.ini", home);
  mkdir(p, 0700);
  stg_config_t cfg;
  char err[512];
  CHECK_EQ_INT(load(&cfg, err, sizeof err), UV_EINVAL);
  CHECK_CONTAINS(err, "not a regular file");
  stg_config_free(&cfg);
  rmdir(p);
}

TEST(show_text_lists_every_section) {
  remove_config();
  stg_config_t cfg;
  char err[512];
  CHECK_EQ_INT(load(&cfg, err, sizeof err), 0);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  stg_config_show(&cfg, f);
  fclose(f);
  const char *secs[] = {"[log]", "[server]", "[supervisor]", "[restart]", "[logs]",
                        "[agent-runner]", "[workflow-runner]", "[component.server]",
                        "[component.workflow-runner]", "[component.agent-runner]"};
  for (size_t i = 0; i < sizeof secs / sizeof secs[0]; i++)
    CHECK_CONTAINS(buf, secs[i]);
  CHECK_CONTAINS(buf, "stop_timeout = 10s");
  free(buf);
  stg_config_free(&cfg);
}

int main(void) {
  snprintf(home, sizeof home, "/tmp/stg-test-config.XXXXXX");
  if (mkdtemp(home) == NULL)
    return 1;
  snprintf(logpath, sizeof logpath, "%s/log", home);
  stg_log_set_sinks(STG_LOG_SINK_FILE);
  stg_log_open(logpath);
  RUN(missing_file_means_defaults);
  RUN(file_values_and_inheritance);
  RUN(every_bad_value_names_file_line_key_and_expectation);
  RUN(first_error_wins);
  RUN(over_long_line_is_an_error_with_its_line);
  RUN(unknown_sections_and_keys_are_warnings);
  RUN(environment_overrides_file_and_flags_override_both);
  RUN(set_errors);
  RUN(not_a_regular_file);
  RUN(show_text_lists_every_section);
  stg_log_close();
  remove_config();
  unlink(logpath);
  rmdir(home);
  return CHECK_DONE();
}
