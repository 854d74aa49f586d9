/* stigmer daemon start|stop|restart|status|logs|run, and the `server`
 * aliases of the original CLI. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "agentfetch.h"
#include "applets.h"
#include "cli.h"
#include "ctlclient.h"
#include "log.h"
#include "parse.h"

static const char usage[] =
    "Usage: stigmer daemon COMMAND [ARGS]\n"
    "\n"
    "  start                 start the stack in the background; returns once it\n"
    "                        is ready (exit 0) or says what failed (exit 1)\n"
    "  stop                  stop the stack and wait for it to exit\n"
    "  restart [COMPONENT]   restart one component, or the whole stack\n"
    "  status [--json]       state of the supervisor and each component\n"
    "                        (exit 0 all ready, 1 not all ready, 3 not running)\n"
    "  logs [-f] [-n N] [--since TIME] [--no-color] [COMPONENT...]\n"
    "                        the components' logs, merged by capture time\n"
    "  run [--no-echo]       the supervisor in the foreground (systemd, launchd),\n"
    "                        with the components' log lines on stderr\n"
    "  install-service [--system] [--dry-run]\n"
    "                        run the stack under systemd or launchd (docs/install.md)\n"
    "  uninstall-service [--system] [--dry-run]\n"
    "                        stop, disable and remove that service\n"
    "\n"
    "Components: server, workflow-runner, agent-runner. See docs/daemon.md.\n";

/* --- helpers -------------------------------------------------------------------------- */

static bool running(stg_config_t *cfg) {
  stg_ctl_t c;
  int rc = stg_ctl_connect(&c, cfg);
  stg_ctl_close(&c);
  return rc == 0;
}

static void fmt_ms(json_t *v, char *buf, size_t len) {
  if (!json_is_integer(v)) {
    snprintf(buf, len, "-");
    return;
  }
  uint64_t ms = (uint64_t)json_integer_value(v);
  if (ms >= 1000)
    ms -= ms % 1000; /* whole seconds are enough for a table */
  stg_format_duration(ms, buf, (unsigned)len);
}

static const char *str_or(json_t *v, const char *dflt) {
  const char *s = json_string_value(v);
  return s ? s : dflt;
}

static void print_status(json_t *st, FILE *out) {
  json_t *s = json_object_get(st, "supervisor");
  char up[32];
  fmt_ms(json_object_get(s, "uptime_ms"), up, sizeof up);
  fprintf(out, "supervisor: pid %lld, up %s, version %s, %s\n",
          (long long)json_integer_value(json_object_get(s, "pid")), up,
          str_or(json_object_get(s, "version"), "?"),
          str_or(json_object_get(s, "state"), "?"));
  fprintf(out, "%-16s %-9s %-8s %-9s %-8s %-28s %s\n", "COMPONENT", "STATE", "PID",
          "UPTIME", "RESTARTS", "LAST EXIT", "STATUS");
  size_t i;
  json_t *c;
  json_array_foreach(json_object_get(st, "components"), i, c) {
    char pid[16] = "-", upt[32], last[64] = "-";
    if (json_is_integer(json_object_get(c, "pid")))
      snprintf(pid, sizeof pid, "%lld", (long long)json_integer_value(json_object_get(c, "pid")));
    fmt_ms(json_object_get(c, "uptime_ms"), upt, sizeof upt);
    json_t *le = json_object_get(c, "last_exit");
    const char *at = json_string_value(json_object_get(le, "at"));
    if (at) {
      char when[16];
      snprintf(when, sizeof when, "%.8s", strchr(at, 'T') ? strchr(at, 'T') + 1 : at);
      if (json_is_integer(json_object_get(le, "signal")))
        snprintf(last, sizeof last, "signal %lld at %s",
                 (long long)json_integer_value(json_object_get(le, "signal")), when);
      else
        snprintf(last, sizeof last, "code %lld at %s",
                 (long long)json_integer_value(json_object_get(le, "code")), when);
    }
    const char *state = str_or(json_object_get(c, "state"), "?");
    char text[600];
    const char *reason = json_string_value(json_object_get(c, "reason"));
    const char *status = json_string_value(json_object_get(c, "status_text"));
    if (strcmp(state, "backoff") == 0) {
      char nr[32];
      fmt_ms(json_object_get(c, "next_restart_ms"), nr, sizeof nr);
      snprintf(text, sizeof text, "restart in %s; %s", nr, reason ? reason : "");
    } else if ((strcmp(state, "failed") == 0 || strcmp(state, "missing") == 0) && reason) {
      snprintf(text, sizeof text, "%s", reason);
    } else if (strcmp(state, "fetching") == 0 && json_is_object(json_object_get(c, "fetch"))) {
      json_t *f = json_object_get(c, "fetch");
      char prog[256];
      stg_agentfetch_format_progress((uint64_t)json_integer_value(json_object_get(f, "bytes")),
                                     (uint64_t)json_integer_value(json_object_get(f, "total")),
                                     json_number_value(json_object_get(f, "rate")), prog,
                                     sizeof prog);
      if (json_is_integer(json_object_get(f, "retry_in_ms"))) {
        char nr[32];
        fmt_ms(json_object_get(f, "retry_in_ms"), nr, sizeof nr);
        snprintf(text, sizeof text, "attempt %lld failed: %s; retry in %s",
                 (long long)json_integer_value(json_object_get(f, "attempts")),
                 str_or(json_object_get(f, "last_error"), "?"), nr);
      } else {
        snprintf(text, sizeof text, "version %s: %s",
                 str_or(json_object_get(f, "version"), "?"), prog);
      }
    } else {
      snprintf(text, sizeof text, "%s", status ? status : "");
    }
    fprintf(out, "%-16s %-9s %-8s %-9s %-8lld %-28s %s\n",
            str_or(json_object_get(c, "name"), "?"), state, pid, upt,
            (long long)json_integer_value(json_object_get(c, "restarts")), last, text);
  }
}

static bool all_ready(json_t *st) {
  size_t i;
  json_t *c;
  json_array_foreach(json_object_get(st, "components"), i, c) {
    const char *state = str_or(json_object_get(c, "state"), "");
    if (strcmp(state, "ready") != 0 && strcmp(state, "disabled") != 0)
      return false;
  }
  return true;
}

/* The last lines of a component's log, through the supervisor. */
static void print_last_lines(stg_config_t *cfg, const char *comp, int n) {
  stg_ctl_t c;
  if (stg_ctl_connect(&c, cfg) != 0)
    return;
  json_t *req = json_pack("{s:s, s:i, s:b, s:[s]}", "cmd", "logs", "tail", n, "follow", 0,
                          "components", comp);
  int rc = stg_ctl_send(&c, req);
  json_decref(req);
  json_t *j;
  while (rc == 0 && stg_ctl_recv(&c, 5000, &j) == 0) {
    if (json_object_get(j, "end")) {
      json_decref(j);
      break;
    }
    const char *line = json_string_value(json_object_get(j, "line"));
    if (line)
      fprintf(stderr, "  %s | %s\n", comp, line);
    json_decref(j);
  }
  stg_ctl_close(&c);
}

/* Explains every component that is not ready; returns how many. */
static int explain_failures(stg_config_t *cfg, json_t *st) {
  int bad = 0;
  size_t i;
  json_t *c;
  json_array_foreach(json_object_get(st, "components"), i, c) {
    const char *state = str_or(json_object_get(c, "state"), "");
    if (strcmp(state, "ready") == 0 || strcmp(state, "disabled") == 0)
      continue;
    bad++;
    const char *name = str_or(json_object_get(c, "name"), "?");
    fprintf(stderr, "stigmer: %s is %s: %s\n", name, state,
            str_or(json_object_get(c, "reason"), "no reason recorded"));
    print_last_lines(cfg, name, 10);
  }
  return bad;
}

/* The agent-runner's download while it transfers, else NULL. */
static json_t *active_fetch(json_t *st) {
  size_t i;
  json_t *c;
  json_array_foreach(json_object_get(st, "components"), i, c) {
    json_t *f = json_object_get(c, "fetch");
    if (strcmp(str_or(json_object_get(c, "state"), ""), "fetching") == 0 &&
        json_is_object(f) && json_is_null(json_object_get(f, "retry_in_ms")))
      return f;
  }
  return NULL;
}

/* While the agent-runner downloads: a progress bar (or lines), polling
 * `status` every 200 ms until the transfer ends or waits for a retry. */
static void show_fetch(stg_config_t *cfg, json_t *f0) {
  stg_cli_progress_t bar;
  stg_cli_progress_init(&bar);
  char what[200];
  snprintf(what, sizeof what, "fetching agent-runner %s",
           str_or(json_object_get(f0, "version"), "?"));
  for (;;) {
    json_t *req = json_pack("{s:s}", "cmd", "status");
    json_t *st = NULL;
    int rc = stg_ctl_call(cfg, req, 10000, &st);
    json_decref(req);
    if (rc != 0)
      break;
    json_t *f = active_fetch(st);
    if (f == NULL) {
      json_decref(st);
      break;
    }
    stg_cli_progress_show(&bar, what, (uint64_t)json_integer_value(json_object_get(f, "bytes")),
                          (uint64_t)json_integer_value(json_object_get(f, "total")),
                          json_number_value(json_object_get(f, "rate")));
    json_decref(st);
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
  }
  stg_cli_progress_end(&bar);
}

/* How long a `wait` may take: every component's ready timeout, plus a
 * margin for the spawns themselves. */
static uint64_t settle_timeout_ms(const stg_config_t *cfg) {
  uint64_t t = 10000;
  for (int i = 0; i < STG_COMP_COUNT; i++)
    t += cfg->component[i].ready_timeout_ms;
  return t;
}

/* Waits for the stack to settle and reports. Returns the exit code. While
 * the agent-runner is being fetched (and the download transfers) it shows
 * the progress, then waits again with a fresh timeout. */
static int wait_and_report(stg_config_t *cfg) {
  uint64_t t = settle_timeout_ms(cfg);
  json_t *st = NULL;
  for (;;) {
    json_t *req = json_pack("{s:s, s:I, s:b}", "cmd", "wait", "timeout_ms", (json_int_t)t,
                            "progress", 1);
    int rc = stg_ctl_call(cfg, req, (int)(t + 5000), &st);
    json_decref(req);
    if (rc != 0) {
      fprintf(stderr, "stigmer: waiting for the stack: %s\n", uv_strerror(rc));
      return 1;
    }
    json_t *f = active_fetch(st);
    if (f == NULL || json_is_true(json_object_get(st, "timeout")))
      break;
    show_fetch(cfg, f);
    json_decref(st);
    st = NULL;
  }
  print_status(st, stdout);
  int code = 0;
  if (!all_ready(st)) {
    if (json_is_true(json_object_get(st, "timeout")))
      fprintf(stderr, "stigmer: the stack was not ready in time\n");
    explain_failures(cfg, st);
    code = 1;
  }
  json_decref(st);
  return code;
}

/* Appends the CLI's --log-level and --set flags to a supervisor's argv
 * (room for 2 + 2 * STG_CLI_MAX_SETS more), and the NULL. Returns the new
 * count. */
static int add_overrides(const stg_cli_t *cli, char **args, int n) {
  if (cli->log_level) {
    args[n++] = "--log-level";
    args[n++] = (char *)cli->log_level;
  }
  for (unsigned i = 0; i < cli->n_sets; i++) {
    args[n++] = "--set";
    args[n++] = (char *)cli->sets[i];
  }
  args[n] = NULL;
  return n;
}

/* Spawns the supervisor in its own session, stdio to logs/supervisor.log.
 * Returns 0 once its control socket listens, 1 when another supervisor won
 * the race (it is running), or -1 when it failed to start (reported). */
static int spawn_supervisor(stg_cli_t *cli, stg_config_t *cfg) {
  char exe[PATH_MAX];
  size_t exelen = sizeof exe;
  int rc = uv_exepath(exe, &exelen);
  if (rc != 0) {
    fprintf(stderr, "stigmer: cannot find this binary: %s\n", uv_strerror(rc));
    return -1;
  }
  char logs[4200], logfile[4300];
  if (mkdir(cfg->home, 0700) != 0 && errno != EEXIST) {
    fprintf(stderr, "stigmer: mkdir %s: %s\n", cfg->home, strerror(errno));
    return -1;
  }
  snprintf(logs, sizeof logs, "%s/logs", cfg->home);
  if (mkdir(logs, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "stigmer: mkdir %s: %s\n", logs, strerror(errno));
    return -1;
  }
  snprintf(logfile, sizeof logfile, "%s/supervisor.log", logs);
  int logfd = open(logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (logfd < 0) {
    fprintf(stderr, "stigmer: open %s: %s\n", logfile, strerror(errno));
    return -1;
  }
  off_t log_start = lseek(logfd, 0, SEEK_END);
  int pfd[2];
  if (pipe2(pfd, O_CLOEXEC) != 0) {
    fprintf(stderr, "stigmer: pipe: %s\n", strerror(errno));
    close(logfd);
    return -1;
  }
  char *args[8 + 2 * STG_CLI_MAX_SETS];
  int n = 0;
  args[n++] = "stigmer";
  args[n++] = "agent-runner-supervisor";
  args[n++] = "--home";
  args[n++] = cfg->home;
  args[n++] = "--ready-fd";
  args[n++] = "3";
  n = add_overrides(cli, args, n);
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "stigmer: fork: %s\n", strerror(errno));
    close(pfd[0]);
    close(pfd[1]);
    close(logfd);
    return -1;
  }
  if (pid == 0) {
    setsid();
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
      dup2(devnull, 0);
    dup2(logfd, 1);
    dup2(logfd, 2);
    dup2(pfd[1], 3); /* dup2 clears FD_CLOEXEC on the copy */
    execv(exe, args);
    dprintf(2, "stigmer: exec %s: %s\n", exe, strerror(errno));
    _exit(127);
  }
  close(pfd[1]);
  close(logfd);
  char buf[8];
  ssize_t r;
  do
    r = read(pfd[0], buf, sizeof buf);
  while (r < 0 && errno == EINTR);
  close(pfd[0]);
  if (r > 0 && buf[0] == 'o')
    return 0;
  /* It exited before listening: why? */
  int st = 0;
  waitpid(pid, &st, 0);
  if (WIFEXITED(st) && WEXITSTATUS(st) == 1) {
    /* Another supervisor may hold the lock and be about to listen. */
    for (int i = 0; i < 500; i++) {
      if (running(cfg))
        return 1;
      struct timespec ts = {0, 10 * 1000000L};
      nanosleep(&ts, NULL);
    }
  }
  fprintf(stderr, "stigmer: the supervisor did not start (%s %d); its log %s says:\n",
          WIFEXITED(st) ? "exit status" : "signal",
          WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), logfile);
  /* Print what it wrote this time. */
  FILE *f = fopen(logfile, "re");
  if (f) {
    fseek(f, log_start, SEEK_SET);
    char line[4096];
    while (fgets(line, sizeof line, f))
      fprintf(stderr, "  %s", line);
    fclose(f);
  }
  return -1;
}

/* The state of one component in a status reply, or "". */
static const char *comp_state(json_t *st, const char *name) {
  size_t i;
  json_t *c;
  json_array_foreach(json_object_get(st, "components"), i, c) {
    if (strcmp(str_or(json_object_get(c, "name"), ""), name) == 0)
      return str_or(json_object_get(c, "state"), "");
  }
  return "";
}

int stg_cli_ensure_daemon(stg_cli_t *cli) {
  stg_config_t *cfg = stg_cli_config(cli);
  if (!running(cfg)) {
    fprintf(stderr, "stigmer: starting the daemon\n");
    if (spawn_supervisor(cli, cfg) < 0)
      return 1;
  }
  /* Wait for the stack to settle; only the server and the workflow runner
   * are needed to run workflows. */
  uint64_t t = settle_timeout_ms(cfg);
  json_t *req = json_pack("{s:s, s:I}", "cmd", "wait", "timeout_ms", (json_int_t)t);
  json_t *st = NULL;
  int rc = stg_ctl_call(cfg, req, (int)(t + 5000), &st);
  json_decref(req);
  if (rc != 0) {
    fprintf(stderr, "stigmer: waiting for the daemon: %s\n", uv_strerror(rc));
    return 1;
  }
  int code = 0;
  static const char *const need[] = {"server", "workflow-runner"};
  for (size_t i = 0; i < 2; i++) {
    const char *state = comp_state(st, need[i]);
    if (strcmp(state, "ready") != 0) {
      fprintf(stderr, "stigmer: the daemon's %s is %s; workflows need it ready\n", need[i],
              *state ? state : "missing");
      code = 1;
    }
  }
  if (code != 0)
    explain_failures(cfg, st);
  json_decref(st);
  return code;
}

/* --- commands ---------------------------------------------------------------------------- */

static int cmd_start(stg_cli_t *cli, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fputs(usage, stdout);
      return 0;
    }
    return stg_cli_usage_error("daemon start: unexpected argument '%s'", argv[i]);
  }
  stg_config_t *cfg = stg_cli_config(cli);
  int rc = running(cfg) ? 1 : spawn_supervisor(cli, cfg);
  if (rc < 0)
    return 1;
  if (rc == 1) {
    /* Already running (or another start won the race): say so, show it. */
    printf("stigmer: the daemon is already running\n");
    json_t *req = json_pack("{s:s}", "cmd", "status");
    json_t *st = NULL;
    int crc = stg_ctl_call(cfg, req, 10000, &st);
    json_decref(req);
    if (crc == 0) {
      print_status(st, stdout);
      json_decref(st);
    }
    return 0;
  }
  return wait_and_report(cfg);
}

static long read_pid(stg_config_t *cfg) {
  char pidfile[4300];
  stg_config_path(cfg, "run/supervisor.pid", pidfile, sizeof pidfile);
  long pid = 0;
  FILE *f = fopen(pidfile, "re");
  if (f) {
    if (fscanf(f, "%ld", &pid) != 1)
      pid = 0;
    fclose(f);
  }
  return pid;
}

/* Waits for process pid to exit. */
static int wait_gone(long pid, uint64_t limit_ms) {
  uint64_t start = uv_hrtime();
  while ((uv_hrtime() - start) / 1000000u < limit_ms) {
    if (pid <= 0 || kill((pid_t)pid, 0) != 0)
      return 0;
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL);
  }
  return -1;
}

static uint64_t stop_limit_ms(stg_config_t *cfg) {
  uint64_t t = 5000;
  for (int i = 0; i < STG_COMP_COUNT; i++)
    t += cfg->component[i].stop_timeout_ms + 1000;
  return t;
}

static int stop_daemon(stg_config_t *cfg, bool say_not_running) {
  stg_ctl_t c;
  int rc = stg_ctl_connect(&c, cfg);
  if (rc != 0) {
    if (say_not_running)
      printf("stigmer: the daemon is not running\n");
    return 0;
  }
  long pid = read_pid(cfg);
  json_t *req = json_pack("{s:s}", "cmd", "stop");
  rc = stg_ctl_send(&c, req);
  json_decref(req);
  uint64_t limit = stop_limit_ms(cfg);
  json_t *j = NULL;
  /* The reply, then the close when it exits. */
  while (rc == 0 && (rc = stg_ctl_recv(&c, (int)limit, &j)) == 0)
    json_decref(j);
  stg_ctl_close(&c);
  if (rc != UV_EOF) {
    fprintf(stderr, "stigmer: the daemon did not stop within %llus (%s); see "
            "`stigmer daemon status`\n", (unsigned long long)(limit / 1000), uv_strerror(rc));
    return 1;
  }
  if (wait_gone(pid, limit) != 0) {
    fprintf(stderr, "stigmer: the supervisor closed its socket but is still running "
            "after %llus\n", (unsigned long long)(limit / 1000));
    return 1;
  }
  printf("stigmer: the daemon stopped\n");
  return 0;
}

static int cmd_stop(stg_cli_t *cli, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fputs(usage, stdout);
      return 0;
    }
    return stg_cli_usage_error("daemon stop: unexpected argument '%s'", argv[i]);
  }
  return stop_daemon(stg_cli_config(cli), true);
}

static int cmd_restart(stg_cli_t *cli, int argc, char **argv) {
  const char *comp = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fputs(usage, stdout);
      return 0;
    }
    if (argv[i][0] == '-' || comp != NULL)
      return stg_cli_usage_error("daemon restart: unexpected argument '%s'", argv[i]);
    comp = argv[i];
  }
  if (comp && strcmp(comp, "all") != 0 && stg_component_lookup(comp) < 0)
    return stg_cli_usage_error("daemon restart: unknown component '%s' (server, "
                               "workflow-runner, agent-runner)", comp);
  stg_config_t *cfg = stg_cli_config(cli);
  if (!running(cfg)) {
    if (comp && strcmp(comp, "all") != 0) {
      fprintf(stderr, "stigmer: the daemon is not running (stigmer daemon start)\n");
      return 3;
    }
    int rc = spawn_supervisor(cli, cfg);
    if (rc < 0)
      return 1;
    return wait_and_report(cfg);
  }
  json_t *req = comp ? json_pack("{s:s, s:s}", "cmd", "restart", "component", comp)
                     : json_pack("{s:s}", "cmd", "restart");
  json_t *reply = NULL;
  int rc = stg_ctl_call(cfg, req, 10000, &reply);
  json_decref(req);
  if (rc != 0) {
    fprintf(stderr, "stigmer: restart: %s\n", uv_strerror(rc));
    return 1;
  }
  if (!json_is_true(json_object_get(reply, "ok"))) {
    fprintf(stderr, "stigmer: restart: %s\n",
            str_or(json_object_get(json_object_get(reply, "error"), "message"), "refused"));
    json_decref(reply);
    return 1;
  }
  json_decref(reply);
  return wait_and_report(cfg);
}

static int cmd_status(stg_cli_t *cli, int argc, char **argv) {
  bool json = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0)
      json = true;
    else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fputs(usage, stdout);
      return 0;
    } else
      return stg_cli_usage_error("daemon status: unexpected argument '%s'", argv[i]);
  }
  stg_config_t *cfg = stg_cli_config(cli);
  json_t *req = json_pack("{s:s}", "cmd", "status");
  json_t *st = NULL;
  int rc = stg_ctl_call(cfg, req, 10000, &st);
  json_decref(req);
  if (rc != 0) {
    if (json)
      printf("{\"running\": false}\n");
    else
      printf("stigmer: the daemon is not running\n");
    return 3;
  }
  if (json) {
    json_object_del(st, "ok");
    json_object_set_new(st, "running", json_true());
    char *s = json_dumps(st, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    printf("%s\n", s ? s : "{}");
    free(s);
  } else {
    print_status(st, stdout);
  }
  int code = all_ready(st) ? 0 : 1;
  json_decref(st);
  return code;
}

static int cmd_run(stg_cli_t *cli, int argc, char **argv) {
  bool echo = true;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--no-echo") == 0)
      echo = false;
    else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fputs(usage, stdout);
      return 0;
    } else
      return stg_cli_usage_error("daemon run: unexpected argument '%s'", argv[i]);
  }
  stg_config_t *cfg = stg_cli_config(cli); /* config errors exit 2 here */
  char *args[10 + 2 * STG_CLI_MAX_SETS];
  int n = 0;
  args[n++] = "agent-runner-supervisor";
  args[n++] = "--home";
  args[n++] = cfg->home;
  if (echo)
    args[n++] = "--echo";
  const char *nc = getenv("NO_COLOR");
  if (echo && isatty(STDERR_FILENO) && (nc == NULL || *nc == '\0'))
    args[n++] = "--color";
  n = add_overrides(cli, args, n);
  return agent_runner_supervisor_main(n, args);
}

typedef struct {
  const char *name;
  int (*fn)(stg_cli_t *, int, char **);
} sub_t;

static const sub_t subs[] = {
    {"logs", stg_cli_daemon_logs}, {"restart", cmd_restart}, {"run", cmd_run},
    {"start", cmd_start},          {"status", cmd_status},   {"stop", cmd_stop},
    {"install-service", stg_cli_daemon_install_service},
    {"uninstall-service", stg_cli_daemon_uninstall_service},
};

int stg_cli_daemon(stg_cli_t *cli, int argc, char **argv) {
  if (argc < 2)
    return stg_cli_usage_error("daemon: missing command (start, stop, restart, status, "
                               "logs, run)");
  if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    fputs(usage, stdout);
    return 0;
  }
  for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
    if (strcmp(subs[i].name, argv[1]) == 0)
      return subs[i].fn(cli, argc - 1, argv + 1);
  return stg_cli_usage_error("daemon: unknown command '%s'", argv[1]);
}

/* `stigmer server` starts; `stigmer server stop|status|logs` as the
 * original CLI had them. */
int stg_cli_server(stg_cli_t *cli, int argc, char **argv) {
  if (argc < 2)
    return cmd_start(cli, 1, (char *[]){"start", NULL});
  if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    printf("Usage: stigmer server [stop|status|logs ...]\n"
           "Aliases of `stigmer daemon start|stop|status|logs`.\n");
    return 0;
  }
  static const char *const allowed[] = {"start", "stop", "status", "logs", "restart"};
  for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
    if (strcmp(argv[1], allowed[i]) == 0)
      return stg_cli_daemon(cli, argc, argv);
  return stg_cli_usage_error("server: unknown command '%s' (stop, status, logs)", argv[1]);
}
