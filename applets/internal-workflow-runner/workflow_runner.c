/* internal-workflow-runner (stigmer-workflow-runner): the stack's workflow
 * runner.
 *
 * For now it waits until the API server answers GET /healthz (retrying
 * with exponential backoff), tells the supervisor it is ready (READY=1),
 * and then waits for SIGTERM/SIGINT (or the supervisor's death, see
 * lib/pdeath.h), making no wakeups meanwhile. Running workflows comes
 * later.
 *
 * Exit status: 0 stopped by a signal, 1 cannot run (parent gone), 2 usage
 * or configuration error.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "applets.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "notify.h"
#include "pdeath.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

static const char usage[] =
    "Usage: stigmer-workflow-runner [--home DIR] [--server HOST:PORT] [--log-level LEVEL]\n"
    "       stigmer internal-workflow-runner [OPTIONS]\n"
    "\n"
    "The Stigmer stack's workflow runner. Normally started by the\n"
    "supervisor (`stigmer daemon start`), which passes STIGMER_HOME and\n"
    "NOTIFY_SOCKET; it can also run on its own.\n"
    "\n"
    "This version only waits until the API server answers GET /healthz, then\n"
    "reports itself ready and idles until stopped; it does not run workflows\n"
    "yet.\n"
    "\n"
    "  --home DIR            STIGMER_HOME (default ~/.stigmer)\n"
    "  --server HOST:PORT    the API server (default: STIGMER_SERVER_ADDR, else\n"
    "                        [server] listen, 127.0.0.1:7234)\n"
    "  --log-level LEVEL     error, warn, info or debug\n"
    "  -h, --help            this text\n"
    "\n"
    "SIGTERM or SIGINT: exit 0.\n"
    "Exit status: 0 stopped, 1 cannot run, 2 usage or configuration error.\n";

enum {
  BACKOFF_INITIAL_MS = 50,
  BACKOFF_MAX_MS = 2000,
  CHECK_TIMEOUT_MS = 2000,
  LOG_EVERY = 15 /* at the cap, a reminder every this many attempts (~30 s) */
};

typedef struct {
  uv_loop_t loop;
  uv_signal_t sigterm;
  uv_signal_t sigint;
  uv_timer_t retry;         /* runs only while the server is not up yet */
  stg_http_get_t check;
  stg_pdeath_t pdeath;
  const char *server;       /* the API server's address */
  uint64_t delay_ms;        /* the next retry delay */
  unsigned attempts;
  bool checking;            /* check is in flight */
  bool ready;
  bool stopping;
  char last_reason[128];
} runner_t;

static void start_check(runner_t *r);

static void close_all(runner_t *r) {
  uv_close((uv_handle_t *)&r->sigterm, NULL);
  uv_close((uv_handle_t *)&r->sigint, NULL);
  uv_close((uv_handle_t *)&r->retry, NULL);
  stg_pdeath_close(&r->pdeath);
}

static void on_retry(uv_timer_t *t) {
  runner_t *r = container_of(t, runner_t, retry);
  start_check(r);
}

static void on_check(stg_http_get_t *g, int err, int status, const char *body, size_t len) {
  runner_t *r = container_of(g, runner_t, check);
  r->checking = false;
  if (r->stopping) {
    close_all(r);
    return;
  }
  if (err == 0 && status == 200) {
    r->ready = true;
    stg_info("the server at %s is up; ready", r->server);
    char msg[200];
    snprintf(msg, sizeof msg, "STATUS=connected to the server at %s", r->server);
    int nrc = stg_notify(msg);
    if (nrc == 0)
      nrc = stg_notify("READY=1");
    if (nrc != 0)
      stg_warn("tell the supervisor we are ready ($NOTIFY_SOCKET): %s", uv_strerror(nrc));
    return; /* from here on, no timers: nothing wakes us but a signal */
  }
  char reason[128];
  if (err != 0)
    snprintf(reason, sizeof reason, "%s", uv_strerror(err));
  else
    snprintf(reason, sizeof reason, "GET /healthz answered %d", status);
  bool changed = strcmp(reason, r->last_reason) != 0;
  bool reminder = r->delay_ms >= BACKOFF_MAX_MS && r->attempts % LOG_EVERY == 0;
  stg_log(changed || reminder ? STG_LOG_INFO : STG_LOG_DEBUG,
          "waiting for the server at %s: %s; retrying in %llums (attempt %u)", r->server,
          reason, (unsigned long long)r->delay_ms, r->attempts);
  snprintf(r->last_reason, sizeof r->last_reason, "%s", reason);
  uv_timer_start(&r->retry, on_retry, r->delay_ms, 0);
  r->delay_ms = r->delay_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->delay_ms * 2;
}

static void start_check(runner_t *r) {
  stg_http_get_options_t o = {
      .addr = r->server,
      .path = "/healthz",
      .timeout_ms = CHECK_TIMEOUT_MS,
      .cb = on_check,
  };
  r->attempts++;
  int rc = stg_http_get(&r->loop, &r->check, &o);
  if (rc != 0) {
    /* Only for a malformed address or no memory: checked before, so retry. */
    stg_error("check the server at %s: %s", r->server, uv_strerror(rc));
    uv_timer_start(&r->retry, on_retry, BACKOFF_MAX_MS, 0);
    return;
  }
  r->checking = true;
}

static void on_signal(uv_signal_t *sig, int signum) {
  runner_t *r = sig->data;
  if (r->stopping)
    return;
  r->stopping = true;
  if (signum == SIGTERM && stg_pdeath_parent_gone(&r->pdeath))
    stg_info("the supervisor (pid %ld) is gone; stopping", (long)r->pdeath.parent);
  else
    stg_info("%s: stopping", signum == SIGINT ? "SIGINT" : "SIGTERM");
  stg_notify("STOPPING=1");
  uv_timer_stop(&r->retry);
  if (r->checking)
    stg_http_get_cancel(&r->check); /* on_check closes the rest */
  else
    close_all(r);
}

static int run_runner(const char *server) {
  runner_t r;
  int status = 1;
  memset(&r, 0, sizeof r);
  r.server = server;
  r.delay_ms = BACKOFF_INITIAL_MS;
  int rc = uv_loop_init(&r.loop);
  if (rc != 0) {
    stg_error("cannot start the event loop: %s", uv_strerror(rc));
    return 1;
  }
  rc = stg_pdeath_init(&r.loop, &r.pdeath);
  if (rc == UV_ESRCH) {
    stg_error("the supervisor that started this runner is already gone; exiting");
    goto out;
  }
  if (rc != 0) {
    stg_error("watch the supervisor: %s", uv_strerror(rc));
    goto out;
  }
  uv_signal_init(&r.loop, &r.sigterm);
  uv_signal_init(&r.loop, &r.sigint);
  uv_timer_init(&r.loop, &r.retry);
  r.sigterm.data = r.sigint.data = &r;
  uv_signal_start(&r.sigterm, on_signal, SIGTERM);
  uv_signal_start(&r.sigint, on_signal, SIGINT);
  stg_info("waiting for the server at %s", server);
  start_check(&r);
  uv_run(&r.loop, UV_RUN_DEFAULT);
  status = 0;
out:
  if (uv_loop_close(&r.loop) != 0)
    stg_warn("the event loop closed with handles still open");
  return status;
}

int internal_workflow_runner_main(int argc, char **argv) {
  static const struct option opts[] = {
      {"home", required_argument, NULL, 'H'},
      {"server", required_argument, NULL, 'l'},
      {"log-level", required_argument, NULL, 'L'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *name = "stigmer-workflow-runner";
  const char *home = NULL, *server = NULL, *level = NULL;
  opterr = 0;
  optind = 1;
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'H':
      home = optarg;
      break;
    case 'l':
      server = optarg;
      break;
    case 'L':
      level = optarg;
      break;
    case 'h':
      fputs(usage, stdout);
      return 0;
    default:
      fprintf(stderr, "%s: unknown option or missing value '%s'\n"
              "Try '%s --help' for more information.\n", name, argv[optind - 1], name);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "%s: unexpected argument '%s'\n"
            "Try '%s --help' for more information.\n", name, argv[optind], name);
    return 2;
  }
  stg_log_set_name(name);
  stg_config_t cfg;
  char err[4608];
  if (stg_config_init(&cfg, home) != 0) {
    fprintf(stderr, "%s: cannot find a home directory: set STIGMER_HOME or use --home\n", name);
    return 2;
  }
  int rc = stg_config_load(&cfg, err, sizeof err);
  if (rc == 0 && level)
    rc = stg_config_set(&cfg, "log.level", level, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "%s: %s\n", name, err);
    stg_config_free(&cfg);
    return 2;
  }
  stg_log_set_level(cfg.log.level);
  const char *from = "--server";
  if (server == NULL || *server == '\0') {
    server = getenv("STIGMER_SERVER_ADDR");
    from = "STIGMER_SERVER_ADDR";
  }
  if (server == NULL || *server == '\0') {
    server = cfg.server.listen;
    from = "[server] listen";
  }
  struct sockaddr_storage ss;
  if (stg_http_parse_addr(server, &ss) != 0) {
    fprintf(stderr, "%s: %s: expected host:port, such as 127.0.0.1:7234, got '%s'\n", name,
            from, server);
    stg_config_free(&cfg);
    return 2;
  }
  char *addr = strdup(server);
  stg_config_free(&cfg);
  if (addr == NULL) {
    fprintf(stderr, "%s: out of memory\n", name);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  int status = run_runner(addr);
  free(addr);
  return status;
}
