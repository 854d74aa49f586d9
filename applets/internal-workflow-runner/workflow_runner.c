/* internal-workflow-runner (stigmer-workflow-runner): the stack's workflow
 * runner.
 *
 * It waits until the API server answers GET /healthz (retrying with
 * exponential backoff), tells the supervisor it is ready (READY=1), then
 * claims `workflow` tasks with a long poll, up to [workflow-runner]
 * concurrency at once, and runs their steps (wfr_task.c). One claim is
 * outstanding at a time; an idle runner wakes only when it returns.
 *
 * SIGTERM/SIGINT (or the supervisor's death, see lib/pdeath.h): no more
 * claims; running steps get half the stop timeout to finish, then are
 * stopped (TERM, then KILL); their tasks are released; exit 0.
 *
 * Exit status: 0 stopped by a signal, 1 cannot run (parent gone), 2 usage
 * or configuration error.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "applets.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "notify.h"
#include "parse.h"
#include "pdeath.h"
#include "wfr.h"


static const char usage[] =
    "Usage: stigmer-workflow-runner [--home DIR] [--server HOST:PORT] [--log-level LEVEL]\n"
    "       stigmer internal-workflow-runner [OPTIONS]\n"
    "\n"
    "The Stigmer stack's workflow runner. Normally started by the\n"
    "supervisor (`stigmer daemon start`), which passes STIGMER_HOME and\n"
    "NOTIFY_SOCKET; it can also run on its own.\n"
    "\n"
    "It waits until the API server answers GET /healthz, reports itself ready,\n"
    "then claims workflow tasks from the server ([workflow-runner] concurrency\n"
    "at once) and runs their steps: `run` steps as /bin/sh -c in their own\n"
    "process group, `agent` steps as agent tasks. See docs/run.md.\n"
    "\n"
    "  --home DIR            STIGMER_HOME (default ~/.stigmer)\n"
    "  --server HOST:PORT    the API server (default: STIGMER_SERVER_ADDR, else\n"
    "                        [server] listen, 127.0.0.1:7234)\n"
    "  --log-level LEVEL     error, warn, info or debug\n"
    "  -h, --help            this text\n"
    "\n"
    "SIGTERM or SIGINT: stop claiming, let running steps finish within half of\n"
    "[component.workflow-runner] stop_timeout, else stop them, release their\n"
    "tasks, exit 0.\n"
    "Exit status: 0 stopped, 1 cannot run, 2 usage or configuration error.\n";

enum {
  BACKOFF_INITIAL_MS = 50,
  BACKOFF_MAX_MS = 2000,
  CLAIM_ERROR_INITIAL_MS = 1000, /* the server answered, but not 200/204 */
  CLAIM_ERROR_MAX_MS = 30000,
  CHECK_TIMEOUT_MS = 2000,
  CLAIM_WAIT_MS = 30000,
  LOG_EVERY = 15 /* at the cap, a reminder every this many attempts (~30 s) */
};

typedef struct {
  stg__wfr_t w;             /* what the tasks see; w.loop is the loop */
  uv_signal_t sigterm;
  uv_signal_t sigint;
  uv_timer_t retry;         /* health check retries, then claim backoff */
  uv_timer_t stop_timer;    /* while stopping: the drain, then the hard end */
  stg_http_get_t check;
  stg__wfr_call_t claim;
  stg_pdeath_t pdeath;
  uint64_t delay_ms;        /* the next retry delay */
  unsigned attempts;
  unsigned claim_failures;  /* in a row */
  bool checking;            /* check is in flight */
  bool ready;
  bool closed;
  int stop_phase;           /* 1 draining, 2 killing, 3 aborting */
  char last_reason[256];
} runner_t;

static void start_check(runner_t *r);
static void claim_next(runner_t *r);

static void close_all(runner_t *r) {
  if (r->closed)
    return;
  r->closed = true;
  uv_close((uv_handle_t *)&r->sigterm, NULL);
  uv_close((uv_handle_t *)&r->sigint, NULL);
  uv_close((uv_handle_t *)&r->retry, NULL);
  uv_close((uv_handle_t *)&r->stop_timer, NULL);
  stg__wfr_call_close(&r->claim, NULL);
  stg_pdeath_close(&r->pdeath);
}

/* Stopping, and nothing left in flight: close the loop's handles. */
static void maybe_exit(runner_t *r) {
  if (!r->w.stopping || r->closed || r->checking || r->claim.busy || r->w.n_tasks > 0)
    return;
  stg_info("stopped");
  close_all(r);
}

void stg__wfr_task_gone(stg__wfr_t *w) {
  runner_t *r = container_of(w, runner_t, w);
  if (r->w.stopping)
    maybe_exit(r);
  else
    claim_next(r);
}

/* --- claims ------------------------------------------------------------------------- */

static void on_claim_retry(uv_timer_t *t) {
  runner_t *r = container_of(t, runner_t, retry);
  claim_next(r);
}

static void on_claim(stg__wfr_call_t *c, int err, int status, json_t *body) {
  runner_t *r = container_of(c, runner_t, claim);
  if (err == UV_ECANCELED) {
    maybe_exit(r);
    return;
  }
  if (err == 0 && (status == 200 || status == 204)) {
    if (r->claim_failures > 0)
      stg_info("claiming tasks from the server at %s again", r->w.server);
    r->claim_failures = 0;
    r->last_reason[0] = '\0';
    json_t *task = json_object_get(body, "task");
    const char *tid = json_string_value(json_object_get(task, "id"));
    if (status == 200 && tid)
      stg__wfr_task_abandon_id(&r->w, tid);
    if (status == 200 && json_is_object(task)) {
      /* While stopping, the new task releases itself at once. */
      int rc = stg__wfr_task_start(&r->w, task);
      if (rc != 0)
        stg_error("start task %s: %s; its lease will lapse",
                  json_string_value(json_object_get(task, "id")) ?: "?", uv_strerror(rc));
    } else if (status == 200) {
      stg_warn("claim a task: a reply without a task");
    }
    if (r->w.stopping)
      maybe_exit(r);
    else
      claim_next(r);
    return;
  }
  char reason[256];
  uint64_t delay;
  if (err != 0) {
    snprintf(reason, sizeof reason, "%s", uv_strerror(err));
    delay = BACKOFF_INITIAL_MS;
    for (unsigned i = 0; i < r->claim_failures && delay < BACKOFF_MAX_MS; i++)
      delay *= 2;
    if (delay > BACKOFF_MAX_MS)
      delay = BACKOFF_MAX_MS;
  } else {
    const char *m =
        json_string_value(json_object_get(json_object_get(body, "error"), "message"));
    snprintf(reason, sizeof reason, "the server answered %d%s%s", status, m ? ": " : "",
             m ? m : "");
    delay = CLAIM_ERROR_INITIAL_MS;
    for (unsigned i = 0; i < r->claim_failures && delay < CLAIM_ERROR_MAX_MS; i++)
      delay *= 2;
    if (delay > CLAIM_ERROR_MAX_MS)
      delay = CLAIM_ERROR_MAX_MS;
  }
  r->claim_failures++;
  bool changed = strcmp(reason, r->last_reason) != 0;
  stg_log(changed || r->claim_failures % LOG_EVERY == 0 ? STG_LOG_INFO : STG_LOG_DEBUG,
          "claim a task from the server at %s: %s; retrying in %llums", r->w.server, reason,
          (unsigned long long)delay);
  snprintf(r->last_reason, sizeof r->last_reason, "%s", reason);
  if (r->w.stopping) {
    maybe_exit(r);
    return;
  }
  uv_timer_start(&r->retry, on_claim_retry, delay, 0);
}

/* One claim at a time, while there is room for another task. */
static void claim_next(runner_t *r) {
  if (!r->ready || r->w.stopping || r->claim.busy || uv_is_active((uv_handle_t *)&r->retry) ||
      r->w.n_tasks >= r->w.concurrency)
    return;
  json_t *req = json_pack("{s:s, s:s, s:s}", "kind", "workflow", "worker", r->w.worker,
                          "wait", "30s");
  stg__wfr_call_options_t o = {
      .method = "POST", .path = "/v1/tasks/claim", .body = req,
      .timeout_ms = CLAIM_WAIT_MS + 10000, .max_attempts = 1, .what = "claim a task"};
  int rc = req ? stg__wfr_call_start(&r->claim, &o, on_claim) : UV_ENOMEM;
  json_decref(req);
  if (rc != 0) {
    stg_error("claim a task: %s", uv_strerror(rc));
    uv_timer_start(&r->retry, on_claim_retry, BACKOFF_MAX_MS, 0);
  }
}

/* --- waiting for the server ------------------------------------------------------------ */

static void on_retry(uv_timer_t *t) {
  runner_t *r = container_of(t, runner_t, retry);
  start_check(r);
}

static void on_check(stg_http_get_t *g, int err, int status, const char *body, size_t len) {
  runner_t *r = container_of(g, runner_t, check);
  r->checking = false;
  if (r->w.stopping) {
    maybe_exit(r);
    return;
  }
  if (err == 0 && status == 200) {
    r->ready = true;
    stg_info("the server at %s is up; ready", r->w.server);
    char msg[200];
    snprintf(msg, sizeof msg, "STATUS=connected to the server at %s", r->w.server);
    int nrc = stg_notify(msg);
    if (nrc == 0)
      nrc = stg_notify("READY=1");
    if (nrc != 0)
      stg_warn("tell the supervisor we are ready ($NOTIFY_SOCKET): %s", uv_strerror(nrc));
    r->last_reason[0] = '\0';
    claim_next(r); /* from here on, the long-poll claim is the only wakeup when idle */
    return;
  }
  char reason[128];
  if (err != 0)
    snprintf(reason, sizeof reason, "%s", uv_strerror(err));
  else
    snprintf(reason, sizeof reason, "GET /healthz answered %d", status);
  bool changed = strcmp(reason, r->last_reason) != 0;
  bool reminder = r->delay_ms >= BACKOFF_MAX_MS && r->attempts % LOG_EVERY == 0;
  stg_log(changed || reminder ? STG_LOG_INFO : STG_LOG_DEBUG,
          "waiting for the server at %s: %s; retrying in %llums (attempt %u)", r->w.server,
          reason, (unsigned long long)r->delay_ms, r->attempts);
  snprintf(r->last_reason, sizeof r->last_reason, "%s", reason);
  uv_timer_start(&r->retry, on_retry, r->delay_ms, 0);
  r->delay_ms = r->delay_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->delay_ms * 2;
}

static void start_check(runner_t *r) {
  stg_http_get_options_t o = {
      .addr = r->w.server,
      .path = "/healthz",
      .timeout_ms = CHECK_TIMEOUT_MS,
      .cb = on_check,
  };
  r->attempts++;
  int rc = stg_http_get(&r->w.loop, &r->check, &o);
  if (rc != 0) {
    /* Only for a malformed address or no memory: checked before, so retry. */
    stg_error("check the server at %s: %s", r->w.server, uv_strerror(rc));
    uv_timer_start(&r->retry, on_retry, BACKOFF_MAX_MS, 0);
    return;
  }
  r->checking = true;
}

/* --- stopping ------------------------------------------------------------------------------ */

static void on_stop_timer(uv_timer_t *h) {
  runner_t *r = container_of(h, runner_t, stop_timer);
  stg__wfr_task_t *t, *next;
  if (r->stop_phase == 1) {
    r->stop_phase = 2;
    r->w.killing = true;
    for (t = r->w.tasks; t; t = next) {
      next = stg__wfr_task_next(t);
      stg__wfr_task_kill(t);
    }
    uint64_t st = r->w.stop_timeout_ms;
    uint64_t hard = st * 9 / 10 > st / 2 ? st * 9 / 10 - st / 2 : 0;
    uv_timer_start(&r->stop_timer, on_stop_timer, hard, 0);
    return;
  }
  r->stop_phase = 3;
  if (r->w.n_tasks > 0)
    stg_warn("out of stop time with %u task(s) still in flight; their leases will lapse",
             r->w.n_tasks);
  for (t = r->w.tasks; t; t = next) {
    next = stg__wfr_task_next(t);
    stg__wfr_task_abort(t);
  }
}

static void on_signal(uv_signal_t *sig, int signum) {
  runner_t *r = sig->data;
  if (r->w.stopping)
    return;
  r->w.stopping = true;
  if (signum == SIGTERM && stg_pdeath_parent_gone(&r->pdeath))
    stg_info("the supervisor (pid %ld) is gone; stopping", (long)r->pdeath.parent);
  else
    stg_info("%s: stopping", signum == SIGINT ? "SIGINT" : "SIGTERM");
  stg_notify("STOPPING=1");
  uv_timer_stop(&r->retry);
  if (r->checking)
    stg_http_get_cancel(&r->check); /* on_check goes on */
  stg__wfr_call_cancel(&r->claim);
  if (r->w.n_tasks > 0) {
    char d[32];
    stg_format_duration(r->w.stop_timeout_ms / 2, d, sizeof d);
    stg_info("%u task(s) running; their steps have %s to finish", r->w.n_tasks, d);
  }
  stg__wfr_task_t *t, *next;
  for (t = r->w.tasks; t; t = next) {
    next = stg__wfr_task_next(t);
    stg__wfr_task_stop(t);
  }
  r->stop_phase = 1;
  uv_timer_start(&r->stop_timer, on_stop_timer, r->w.stop_timeout_ms / 2, 0);
  maybe_exit(r);
}

static int worker_id(char *buf, size_t len) {
  char host[256];
  size_t hl = sizeof host;
  if (uv_os_gethostname(host, &hl) != 0)
    snprintf(host, sizeof host, "localhost");
  snprintf(buf, len, "%s:%d", host, (int)getpid());
  return 0;
}

static int run_runner(const char *server, const stg_config_t *cfg) {
  runner_t r;
  int status = 1, rc;
  memset(&r, 0, sizeof r);
  r.w.server = server;
  r.w.concurrency = (unsigned)cfg->workflow_runner.concurrency;
  r.w.stop_timeout_ms = cfg->component[STG_COMP_WORKFLOW_RUNNER].stop_timeout_ms;
  r.w.kill_grace_ms = r.w.stop_timeout_ms / 4;
  if (r.w.kill_grace_ms > 5000)
    r.w.kill_grace_ms = 5000;
  if (r.w.kill_grace_ms < 100)
    r.w.kill_grace_ms = 100;
  worker_id(r.w.worker, sizeof r.w.worker);
  rc = stg__wfr_steps_init(cfg->home, r.w.steps_dir, sizeof r.w.steps_dir);
  if (rc != 0 && rc != UV_ENOTSUP)
    stg_warn("mkdir %s: %s; a killed runner may leave its steps running", r.w.steps_dir,
             uv_strerror(rc));
  if (rc != 0)
    r.w.steps_dir[0] = '\0';
  else
    stg__wfr_steps_sweep(r.w.steps_dir);
  r.delay_ms = BACKOFF_INITIAL_MS;
  rc = uv_loop_init(&r.w.loop);
  if (rc != 0) {
    stg_error("cannot start the event loop: %s", uv_strerror(rc));
    return 1;
  }
  rc = stg_pdeath_init(&r.w.loop, &r.pdeath);
  if (rc == UV_ESRCH) {
    stg_error("the supervisor that started this runner is already gone; exiting");
    goto out;
  }
  if (rc != 0) {
    stg_error("watch the supervisor: %s", uv_strerror(rc));
    goto out;
  }
  uv_signal_init(&r.w.loop, &r.sigterm);
  uv_signal_init(&r.w.loop, &r.sigint);
  uv_timer_init(&r.w.loop, &r.retry);
  uv_timer_init(&r.w.loop, &r.stop_timer);
  stg__wfr_call_init(&r.w.loop, &r.claim, server);
  r.sigterm.data = r.sigint.data = &r;
  uv_signal_start(&r.sigterm, on_signal, SIGTERM);
  uv_signal_start(&r.sigint, on_signal, SIGINT);
  stg_info("waiting for the server at %s (worker %s, %u at once)", server, r.w.worker,
           r.w.concurrency);
  start_check(&r);
  uv_run(&r.w.loop, UV_RUN_DEFAULT);
  status = 0;
out:
  if (uv_loop_close(&r.w.loop) != 0)
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
  stg_config_overrides_t o = {home, level, NULL, 0};
  if (stg_config_load_all(&cfg, &o, err, sizeof err) != 0) {
    fprintf(stderr, "%s: %s\n", name, err);
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
  if (addr == NULL) {
    fprintf(stderr, "%s: out of memory\n", name);
    stg_config_free(&cfg);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  int status = run_runner(addr, &cfg);
  stg_config_free(&cfg);
  free(addr);
  return status;
}
