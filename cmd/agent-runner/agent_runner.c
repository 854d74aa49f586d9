/* agent-runner: the reference agent-runner program.
 *
 * The supervisor runs this as the stack's third component. What it does:
 *
 *   - reads $STIGMER_HOME/config.ini and STIGMER_* overrides like stigmer
 *     ([agent-runner] provider, base_url, model, ca_file; [log] level), the
 *     server's address from STIGMER_SERVER_ADDR (else [server] listen), and
 *     the model's API key from STIGMER_LLM_API_KEY or OPENAI_API_KEY;
 *   - waits for the server: GET /healthz, retried with exponential backoff
 *     (100 ms doubling to 5 s) until the status is 2xx; then READY=1;
 *   - claims `agent` tasks (POST /v1/tasks/claim, long poll) one at a time,
 *     answers each by calling the chat model (Ollama's /api/chat or an
 *     OpenAI-compatible /v1/chat/completions), heartbeats the lease every
 *     lease/3 meanwhile, and completes the task with the reply as its output
 *     or with an error;
 *   - sends WATCHDOG=1 every half of $WATCHDOG_USEC (none when unset);
 *   - exits 0 on SIGTERM or SIGINT (releasing a task it holds), and when its
 *     parent (the supervisor) dies.
 *
 * All HTTP goes through lib/curluv (libcurl on this uv loop). Every event is
 * one line on stderr in the stg_log format; the API key is never logged.
 * See docs/agent-runner.md.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <jansson.h>
#include <uv.h>

#include "config.h"
#include "curluv.h"
#include "log.h"
#include "notify.h"
#include "parse.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

enum {
  HEALTH_BACKOFF_INITIAL_MS = 100, /* first retry delay of the health check */
  HEALTH_BACKOFF_MAX_MS = 5000,    /* its cap */
  HEALTH_TIMEOUT_MS = 5000,        /* one health-check attempt */
  CLAIM_WAIT_S = 30,               /* long-poll wait asked of the server */
  CLAIM_TIMEOUT_MS = 45000,        /* a claim's whole exchange */
  CLAIM_BACKOFF_INITIAL_MS = 500,  /* a failed claim is retried after this, */
  CLAIM_BACKOFF_MAX_MS = 10000,    /* doubling to this */
  SERVER_MAX_BODY = 4 << 20,       /* a claim's response (the prompt is inside) */
  MODEL_MAX_BODY = 4 << 20,        /* a model's response */
  OUTPUT_MAX = 64 << 10,           /* a task's output */
  DEFAULT_TASK_TIMEOUT_MS = 120000, /* a task without timeout_ms */
  DEFAULT_LEASE_MS = 30000,        /* a claim answer without lease_ms */
  CONNECT_TIMEOUT_MS = 10000,      /* connecting to the model */
  MODEL_BACKOFF_INITIAL_MS = 250,  /* a transient model failure is retried after this, */
  MODEL_BACKOFF_MAX_MS = 8000,     /* doubling to this, within the task's timeout */
  COMPLETE_ATTEMPTS = 5,           /* tries to report a result */
  COMPLETE_RETRY_MS = 1000,
  RELEASE_TIMEOUT_MS = 5000,       /* the release on the way out */
  PPID_POLL_MS = 1000              /* non-Linux: how often the parent is checked */
};

typedef enum { PROVIDER_OLLAMA, PROVIDER_OPENAI } provider_t;

/* The task being worked on; one at a time. */
typedef struct {
  bool held;               /* we hold its lease */
  bool completing;         /* complete (or release) sent */
  char id[64];
  char *prompt;
  char model[256];
  uint64_t timeout_ms;
  uint64_t lease_ms;
  uint64_t deadline;       /* uv_now by which the model must have answered */
  unsigned attempts;       /* model calls so far */
  uint64_t backoff_ms;     /* the next model retry delay */
  unsigned complete_tries;
  char *result;            /* output (succeeded) or error (failed), owned */
  bool succeeded;
  char last_err[2048];      /* the last transient failure, for the final message */
} task_t;

typedef struct {
  uv_loop_t *loop;
  uv_signal_t sig_term;    /* SIGTERM: exit 0 */
  uv_signal_t sig_int;     /* SIGINT: exit 0 */
  uv_signal_t sig_hup;     /* the parent-death signal (and a plain SIGHUP) */
  uv_timer_t retry;        /* backoff of the health check and of claims */
  uv_timer_t watchdog;     /* WATCHDOG=1 pings */
  uv_timer_t ppid_check;   /* non-Linux parent check */
  uv_timer_t heartbeat;    /* lease renewal while a task runs */
  uv_timer_t model_retry;  /* backoff between model calls, and complete retries */
  stg_curluv_t health;     /* GET /healthz */
  stg_curluv_t claim;      /* POST /v1/tasks/claim */
  stg_curluv_t hb;         /* POST .../heartbeat */
  stg_curluv_t model;      /* the chat model */
  stg_curluv_t report;     /* POST .../complete or .../release */
  char hb_task[64];        /* the task the heartbeat in flight is for */
  char model_task[64];     /* the task the model call in flight is for */
  char server[320];        /* "http://host:port" */
  provider_t provider;
  const char *provider_name;
  char base_url[512];      /* without a trailing slash */
  char default_model[256];
  const char *api_key;     /* from the environment; never logged */
  char ca_file[1024];      /* "" finds the system's */
  char worker[160];        /* our worker id */
  task_t task;
  unsigned attempt;        /* health-check attempts so far */
  uint64_t backoff_ms;     /* the next health/claim retry delay */
  uint64_t watchdog_ms;    /* ping interval, 0 for none */
  bool ready;              /* READY=1 sent */
  bool claim_warned;       /* a failing claim was logged at warn level */
  bool stopping;
  pid_t ppid;              /* the parent when we started */
} runner_t;

static void claim_start(runner_t *r);
static void model_call(runner_t *r);
static void report_start(runner_t *r);

/* --- small helpers ----------------------------------------------------------------- */

static void task_clear(task_t *t) {
  free(t->prompt);
  free(t->result);
  memset(t, 0, sizeof *t);
}

static char *dump(json_t *j) {
  char *s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  return s;
}

/* A readable one-line excerpt of a response body: at most 300 bytes,
 * control characters as spaces. */
static void excerpt(const char *body, char *out, size_t outlen) {
  size_t n = 0;
  for (const char *p = body; *p && n + 1 < outlen && n < 300; p++)
    out[n++] = (unsigned char)*p < 0x20 ? ' ' : *p;
  out[n] = '\0';
  while (n > 0 && out[n - 1] == ' ')
    out[--n] = '\0';
}

/* The error text in a JSON error body: {"error":"..."} (Ollama),
 * {"error":{"message":"..."}} (OpenAI, our server), else an excerpt. */
static void error_text(const char *body, char *out, size_t outlen) {
  json_t *j = json_loads(body, 0, NULL);
  json_t *e = json_object_get(j, "error");
  const char *s = NULL;
  if (json_is_string(e))
    s = json_string_value(e);
  else if (json_is_object(e) && json_is_string(json_object_get(e, "message")))
    s = json_string_value(json_object_get(e, "message"));
  if (s != NULL)
    excerpt(s, out, outlen);
  else if (*body != '\0')
    excerpt(body, out, outlen);
  else
    snprintf(out, outlen, "(empty body)");
  json_decref(j);
}

/* The longest prefix of s that is at most max bytes and does not cut a
 * UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t len, size_t max) {
  if (len <= max)
    return len;
  size_t n = max;
  while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
    n--;
  return n;
}

/* --- stopping ---------------------------------------------------------------------- */

static void close_timer(uv_timer_t *t) {
  if (!uv_is_closing((uv_handle_t *)t))
    uv_close((uv_handle_t *)t, NULL);
}

static void stop(runner_t *r, const char *why) {
  if (r->stopping)
    return;
  r->stopping = true;
  stg_info("%s: exiting", why);
  int rc = stg_notify("STOPPING=1");
  if (rc < 0)
    stg_warn("notify STOPPING=1: %s", uv_strerror(rc));
  stg_curluv_cancel(&r->health);
  stg_curluv_cancel(&r->claim);
  stg_curluv_cancel(&r->hb);
  stg_curluv_cancel(&r->model);
  close_timer(&r->retry);
  close_timer(&r->watchdog);
  close_timer(&r->ppid_check);
  close_timer(&r->heartbeat);
  close_timer(&r->model_retry);
  uv_close((uv_handle_t *)&r->sig_term, NULL);
  uv_close((uv_handle_t *)&r->sig_int, NULL);
  uv_close((uv_handle_t *)&r->sig_hup, NULL);
  /* A task we hold goes back to the queue; a result being reported is left
   * to finish (its request has its own timeout). */
  if (r->task.held && !r->task.completing)
    report_start(r);
}

static void on_signal(uv_signal_t *h, int signum) {
  runner_t *r = h->data;
  if (signum == SIGHUP && r->ppid > 1 && getppid() != r->ppid) {
    char why[96];
    snprintf(why, sizeof why, "parent process %ld exited", (long)r->ppid);
    stop(r, why);
    return;
  }
  stop(r, signum == SIGTERM ? "SIGTERM" : signum == SIGINT ? "SIGINT" : "SIGHUP");
}

#ifndef __linux__
static void on_ppid_check(uv_timer_t *t) {
  runner_t *r = container_of(t, runner_t, ppid_check);
  if (getppid() != r->ppid) {
    char why[96];
    snprintf(why, sizeof why, "parent process %ld exited", (long)r->ppid);
    stop(r, why);
  }
}
#endif

/* --- watchdog ---------------------------------------------------------------------- */

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  int rc = stg_notify("WATCHDOG=1");
  if (rc < 0)
    stg_warn("notify WATCHDOG=1: %s", uv_strerror(rc));
  else
    stg_debug("sent WATCHDOG=1");
}

/* --- talking to the server --------------------------------------------------------- */

/* Starts a request to the server: method POST with a JSON body (owned,
 * freed here), or GET when body is NULL. */
static int server_request(runner_t *r, stg_curluv_t *c, const char *path, char *body,
                          uint64_t timeout_ms, stg_curluv_cb cb) {
  char url[1024];
  snprintf(url, sizeof url, "%s%s", r->server, path);
  stg_curluv_options_t o;
  memset(&o, 0, sizeof o);
  o.url = url;
  o.body = body;
  o.body_len = body ? strlen(body) : 0;
  o.timeout_ms = timeout_ms;
  o.max_body = SERVER_MAX_BODY;
  o.cb = cb;
  o.data = r;
  int rc = stg_curluv_start(r->loop, c, &o);
  free(body);
  return rc;
}

/* --- the health check -------------------------------------------------------------- */

static void health_start(runner_t *r);

static void on_retry_health(uv_timer_t *t) { health_start(container_of(t, runner_t, retry)); }
static void on_retry_claim(uv_timer_t *t) { claim_start(container_of(t, runner_t, retry)); }

static void backoff(runner_t *r, uv_timer_cb cb, uint64_t max) {
  uint64_t d = r->backoff_ms;
  r->backoff_ms = d * 2 > max ? max : d * 2;
  uv_timer_start(&r->retry, cb, d, 0);
}

static void become_ready(runner_t *r) {
  r->ready = true;
  stg_info("server %s is healthy (attempt %u)", r->server, r->attempt);
  int rc = stg_notify("READY=1");
  if (rc < 0)
    stg_warn("notify READY=1: %s", uv_strerror(rc));
  else if (getenv("NOTIFY_SOCKET") != NULL)
    stg_info("sent READY=1");
  stg_info("ready; claiming agent tasks one at a time as worker %s", r->worker);
}

static void on_health(stg_curluv_t *c, int err, long status, const char *body, size_t len) {
  (void)body;
  (void)len;
  runner_t *r = c->data;
  if (r->stopping)
    return;
  if (err == 0 && status >= 200 && status <= 299) {
    become_ready(r);
    r->backoff_ms = CLAIM_BACKOFF_INITIAL_MS;
    claim_start(r);
    return;
  }
  char why[600];
  if (err == UV_ECONNREFUSED)
    snprintf(why, sizeof why, "connect: connection refused (%s)", stg_curluv_errmsg(c));
  else if (err != 0)
    snprintf(why, sizeof why, "%s", stg_curluv_errmsg(c));
  else
    snprintf(why, sizeof why, "status %ld", status);
  stg_info("waiting for server: GET %s/healthz (attempt %u): %s; retry in %llu ms", r->server,
           r->attempt, why, (unsigned long long)r->backoff_ms);
  backoff(r, on_retry_health, HEALTH_BACKOFF_MAX_MS);
}

static void health_start(runner_t *r) {
  if (r->stopping)
    return;
  r->attempt++;
  int rc = server_request(r, &r->health, "/healthz", NULL, HEALTH_TIMEOUT_MS, on_health);
  if (rc < 0) {
    stg_warn("GET %s/healthz: %s; retry in %llu ms", r->server, uv_strerror(rc),
             (unsigned long long)r->backoff_ms);
    backoff(r, on_retry_health, HEALTH_BACKOFF_MAX_MS);
  }
}

/* --- reporting: complete or release ------------------------------------------------ */

static void task_done(runner_t *r) {
  uv_timer_stop(&r->heartbeat);
  uv_timer_stop(&r->model_retry);
  task_clear(&r->task);
  if (!r->stopping) {
    r->backoff_ms = CLAIM_BACKOFF_INITIAL_MS;
    claim_start(r);
  }
}

static void on_report_retry(uv_timer_t *t) { report_start(container_of(t, runner_t, model_retry)); }

static void on_report(stg_curluv_t *c, int err, long status, const char *body, size_t len) {
  (void)len;
  runner_t *r = c->data;
  task_t *t = &r->task;
  const char *what = r->stopping && t->result == NULL ? "release" : "complete";
  if (err == 0 && status >= 200 && status <= 299) {
    if (t->result == NULL)
      stg_info("task %s: released", t->id);
    else
      stg_info("task %s: reported %s", t->id, t->succeeded ? "succeeded" : "failed");
    task_done(r);
    return;
  }
  char why[600];
  if (err != 0)
    snprintf(why, sizeof why, "%s", stg_curluv_errmsg(c));
  else
    error_text(body, why, sizeof why);
  if (err == 0 && status == 409) {
    stg_warn("task %s: %s: lease lost (%s); dropping the result", t->id, what, why);
    task_done(r);
    return;
  }
  if (r->stopping || err == UV_ECANCELED || ++t->complete_tries >= COMPLETE_ATTEMPTS ||
      (err == 0 && status >= 400 && status <= 499)) {
    if (err == 0)
      stg_error("task %s: %s: HTTP %ld: %s; giving up (the lease will lapse)", t->id, what,
                status, why);
    else
      stg_error("task %s: %s: %s; giving up (the lease will lapse)", t->id, what, why);
    task_done(r);
    return;
  }
  stg_warn("task %s: %s: %s; retry in %d ms", t->id, what, why, COMPLETE_RETRY_MS);
  uv_timer_start(&r->model_retry, on_report_retry, COMPLETE_RETRY_MS, 0);
}

/* Sends the task's result (t->result set) or, when stopping without a
 * result, a release. */
static void report_start(runner_t *r) {
  task_t *t = &r->task;
  t->completing = true;
  uv_timer_stop(&r->heartbeat);
  char path[160];
  char *body;
  uint64_t timeout = 10000;
  if (t->result == NULL) {
    snprintf(path, sizeof path, "/v1/tasks/%s/release", t->id);
    body = dump(json_pack("{s:s}", "worker", r->worker));
    timeout = RELEASE_TIMEOUT_MS;
  } else {
    snprintf(path, sizeof path, "/v1/tasks/%s/complete", t->id);
    body = dump(json_pack("{s:s, s:s, s:s?, s:s?}", "worker", r->worker, "state",
                          t->succeeded ? "succeeded" : "failed", "error",
                          t->succeeded ? NULL : t->result, "output",
                          t->succeeded ? t->result : NULL));
  }
  int rc = body ? server_request(r, &r->report, path, body, timeout, on_report) : UV_ENOMEM;
  if (rc < 0) {
    stg_error("task %s: POST %s: %s", t->id, path, uv_strerror(rc));
    task_done(r);
  }
}

/* The model call ended: report the result. text is copied. */
static void task_finish(runner_t *r, bool ok, const char *text, size_t len) {
  task_t *t = &r->task;
  if (!t->held || t->completing)
    return;
  uv_timer_stop(&r->model_retry);
  size_t n = utf8_cut(text, len, OUTPUT_MAX);
  if (n < len)
    stg_warn("task %s: output of %zu bytes cut to %zu (the cap is %d)", t->id, len, n,
             OUTPUT_MAX);
  t->result = strndup(text, n);
  t->succeeded = ok;
  if (ok)
    stg_info("task %s: succeeded: %zu bytes of output from %s (attempt %u)", t->id, n,
             t->model, t->attempts);
  else
    stg_warn("task %s: failed: %s", t->id, text);
  if (t->result == NULL) {
    stg_error("task %s: out of memory", t->id);
    task_done(r);
    return;
  }
  report_start(r);
}

/* Stops working on the task without reporting (lease lost, cancelled). */
static void task_abandon(runner_t *r, const char *why) {
  stg_warn("task %s: %s; abandoning it", r->task.id, why);
  stg_curluv_cancel(&r->model);
  task_done(r);
}

/* --- the heartbeat ----------------------------------------------------------------- */

static void on_heartbeat_timer(uv_timer_t *tm);

static uint64_t hb_interval(uint64_t lease_ms) {
  uint64_t i = lease_ms / 3;
  return i < 100 ? 100 : i;
}

static void on_hb(stg_curluv_t *c, int err, long status, const char *body, size_t len) {
  (void)len;
  runner_t *r = c->data;
  task_t *t = &r->task;
  if (r->stopping || err == UV_ECANCELED || !t->held || t->completing ||
      strcmp(r->hb_task, t->id) != 0)
    return; /* stale: for a task that is over */
  if (err == 0 && status == 409) {
    task_abandon(r, "heartbeat: 409, the lease is no longer ours");
    return;
  }
  if (err != 0 || status < 200 || status > 299) {
    char why[600];
    if (err != 0)
      snprintf(why, sizeof why, "%s", stg_curluv_errmsg(c));
    else
      error_text(body, why, sizeof why);
    stg_warn("task %s: heartbeat: %s%s", t->id, err == 0 ? "HTTP error: " : "", why);
    return;
  }
  json_t *j = json_loads(body, 0, NULL);
  bool cancelled = json_is_true(json_object_get(j, "cancelled"));
  json_t *lm = json_object_get(j, "lease_ms");
  if (json_is_integer(lm) && json_integer_value(lm) > 0 &&
      (uint64_t)json_integer_value(lm) != t->lease_ms) {
    t->lease_ms = (uint64_t)json_integer_value(lm);
    uint64_t i = hb_interval(t->lease_ms);
    uv_timer_start(&r->heartbeat, on_heartbeat_timer, i, i);
  }
  json_decref(j);
  if (cancelled)
    task_abandon(r, "cancelled by the server");
  else
    stg_debug("task %s: lease renewed", t->id);
}

static void on_heartbeat_timer(uv_timer_t *tm) {
  runner_t *r = container_of(tm, runner_t, heartbeat);
  task_t *t = &r->task;
  if (!t->held || t->completing || stg_curluv_active(&r->hb))
    return;
  char path[160];
  snprintf(path, sizeof path, "/v1/tasks/%s/heartbeat", t->id);
  char *body = dump(json_pack("{s:s}", "worker", r->worker));
  snprintf(r->hb_task, sizeof r->hb_task, "%s", t->id);
  int rc = body ? server_request(r, &r->hb, path, body, hb_interval(t->lease_ms), on_hb)
                : UV_ENOMEM;
  if (rc < 0)
    stg_warn("task %s: heartbeat: %s", t->id, uv_strerror(rc));
}

/* --- the model --------------------------------------------------------------------- */

static const char *provider_hint(runner_t *r) {
  return r->provider == PROVIDER_OLLAMA ? "is Ollama running? set [agent-runner] base_url"
                                        : "check [agent-runner] base_url";
}

/* The reply's text: message.content (Ollama) or choices[0].message.content. */
static const char *reply_content(runner_t *r, json_t *j) {
  json_t *msg;
  if (r->provider == PROVIDER_OLLAMA)
    msg = json_object_get(j, "message");
  else
    msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
  json_t *c = json_object_get(msg, "content");
  return json_is_string(c) ? json_string_value(c) : NULL;
}

static void on_model_retry(uv_timer_t *tm) { model_call(container_of(tm, runner_t, model_retry)); }

/* A transient failure: retry within the task's timeout, or fail with it. */
static void model_transient(runner_t *r, const char *msg) {
  task_t *t = &r->task;
  snprintf(t->last_err, sizeof t->last_err, "%s", msg);
  uint64_t now = uv_now(r->loop);
  uint64_t d = t->backoff_ms;
  t->backoff_ms = d * 2 > MODEL_BACKOFF_MAX_MS ? MODEL_BACKOFF_MAX_MS : d * 2;
  if (now + d >= t->deadline) {
    char text[2600];
    char dur[32];
    snprintf(text, sizeof text, "%s (gave up after %u attempt%s within the task's timeout of %s)",
             msg, t->attempts, t->attempts == 1 ? "" : "s",
             stg_format_duration(t->timeout_ms, dur, sizeof dur));
    task_finish(r, false, text, strlen(text));
    return;
  }
  stg_warn("task %s: %s; retry in %llu ms (attempt %u)", t->id, msg, (unsigned long long)d,
           t->attempts);
  uv_timer_start(&r->model_retry, on_model_retry, d, 0);
}

static void on_model(stg_curluv_t *c, int err, long status, const char *body, size_t len) {
  (void)len;
  runner_t *r = c->data;
  task_t *t = &r->task;
  if (r->stopping || err == UV_ECANCELED || !t->held || t->completing ||
      strcmp(r->model_task, t->id) != 0)
    return; /* stale: for a task that is over */
  char msg[2048], detail[700];
  const char *who = r->provider_name;
  if (err != 0) {
    switch (err) {
    case UV_ECONNREFUSED:
      snprintf(msg, sizeof msg, "%s at %s: connection refused (%s)", who, r->base_url,
               provider_hint(r));
      model_transient(r, msg);
      return;
    case UV_EAI_NONAME:
      snprintf(msg, sizeof msg, "%s at %s: cannot resolve the host: %s (%s)", who, r->base_url,
               stg_curluv_errmsg(c), provider_hint(r));
      model_transient(r, msg);
      return;
    case UV_ECONNRESET:
      snprintf(msg, sizeof msg, "%s at %s: connection lost: %s", who, r->base_url,
               stg_curluv_errmsg(c));
      model_transient(r, msg);
      return;
    case UV_ETIMEDOUT: {
      char dur[32];
      snprintf(msg, sizeof msg, "%s at %s: no reply within the task's timeout of %s%s%.1000s",
               who, r->base_url, stg_format_duration(t->timeout_ms, dur, sizeof dur),
               t->last_err[0] ? "; before that: " : "", t->last_err);
      task_finish(r, false, msg, strlen(msg));
      return;
    }
    case UV_E2BIG:
      snprintf(msg, sizeof msg, "%s at %s: reply larger than %d bytes", who, r->base_url,
               MODEL_MAX_BODY);
      task_finish(r, false, msg, strlen(msg));
      return;
    default:
      snprintf(msg, sizeof msg, "%s at %s: %s", who, r->base_url, stg_curluv_errmsg(c));
      task_finish(r, false, msg, strlen(msg));
      return;
    }
  }
  if (status >= 500 || status == 429) {
    error_text(body, detail, sizeof detail);
    snprintf(msg, sizeof msg, "%s at %s: HTTP %ld: %s", who, r->base_url, status, detail);
    model_transient(r, msg);
    return;
  }
  if (status < 200 || status > 299) {
    error_text(body, detail, sizeof detail);
    snprintf(msg, sizeof msg, "%s at %s: HTTP %ld: %s%s", who, r->base_url, status, detail,
             status == 401 || status == 403
                 ? " (check STIGMER_LLM_API_KEY or OPENAI_API_KEY)"
                 : "");
    task_finish(r, false, msg, strlen(msg));
    return;
  }
  json_t *j = json_loads(body, 0, NULL);
  const char *text = j ? reply_content(r, j) : NULL;
  if (text == NULL) {
    excerpt(body, detail, sizeof detail);
    snprintf(msg, sizeof msg, "%s at %s: unexpected reply (no %s): %s", who, r->base_url,
             r->provider == PROVIDER_OLLAMA ? "message.content" : "choices[0].message.content",
             detail);
    task_finish(r, false, msg, strlen(msg));
  } else {
    task_finish(r, true, text, strlen(text));
  }
  json_decref(j);
}

static void model_call(runner_t *r) {
  task_t *t = &r->task;
  if (r->stopping || !t->held || t->completing)
    return;
  if (stg_curluv_active(&r->model)) { /* an abandoned call still closing */
    uv_timer_start(&r->model_retry, on_model_retry, 10, 0);
    return;
  }
  uint64_t now = uv_now(r->loop);
  if (now >= t->deadline) {
    char dur[32], msg[2048];
    snprintf(msg, sizeof msg, "%s at %s: no reply within the task's timeout of %s", r->provider_name,
             r->base_url, stg_format_duration(t->timeout_ms, dur, sizeof dur));
    task_finish(r, false, msg, strlen(msg));
    return;
  }
  char url[1100];
  snprintf(url, sizeof url, "%s%s", r->base_url,
           r->provider == PROVIDER_OLLAMA ? "/api/chat" : "/v1/chat/completions");
  json_t *req = json_pack("{s:s, s:[{s:s, s:s}]}", "model", t->model, "messages", "role", "user",
                          "content", t->prompt);
  if (req != NULL && r->provider == PROVIDER_OLLAMA)
    json_object_set_new(req, "stream", json_false());
  char *body = req ? dump(req) : NULL;
  stg_curluv_options_t o;
  memset(&o, 0, sizeof o);
  o.url = url;
  o.body = body;
  o.body_len = body ? strlen(body) : 0;
  o.bearer = r->api_key;
  o.ca_file = r->ca_file[0] ? r->ca_file : NULL;
  o.timeout_ms = t->deadline - now;
  o.connect_timeout_ms = CONNECT_TIMEOUT_MS;
  o.max_body = MODEL_MAX_BODY;
  o.cb = on_model;
  o.data = r;
  t->attempts++;
  snprintf(r->model_task, sizeof r->model_task, "%s", t->id);
  int rc = body ? stg_curluv_start(r->loop, &r->model, &o) : UV_ENOMEM;
  free(body);
  if (rc < 0) {
    char msg[2048];
    snprintf(msg, sizeof msg, "%s at %s: %s%s", r->provider_name, url,
             rc == UV_ENOENT ? "no CA bundle found (set [agent-runner] ca_file)"
             : rc == UV_EINVAL ? "not an http:// or https:// URL"
                               : uv_strerror(rc),
             rc == UV_EINVAL ? " (set [agent-runner] base_url)" : "");
    task_finish(r, false, msg, strlen(msg));
  }
}

/* --- claiming ---------------------------------------------------------------------- */

/* Takes the task out of a claim answer; false when it is unusable (logged;
 * a task with an id is failed with the reason). */
static bool task_take(runner_t *r, const char *body) {
  task_t *t = &r->task;
  json_error_t jerr;
  json_t *j = json_loads(body, 0, &jerr);
  json_t *task = json_object_get(j, "task");
  json_t *id = json_object_get(task, "id");
  json_t *payload = json_object_get(task, "payload");
  json_t *prompt = json_object_get(payload, "prompt");
  json_t *model = json_object_get(payload, "model");
  json_t *tmo = json_object_get(payload, "timeout_ms");
  json_t *lease = json_object_get(task, "lease_ms");
  if (!json_is_string(id) || json_string_length(id) >= sizeof t->id) {
    char ex[400];
    excerpt(body, ex, sizeof ex);
    stg_error("claim: an answer without a task id: %s", ex);
    json_decref(j);
    return false;
  }
  task_clear(t);
  snprintf(t->id, sizeof t->id, "%s", json_string_value(id));
  t->held = true;
  t->lease_ms = json_is_integer(lease) && json_integer_value(lease) > 0
                    ? (uint64_t)json_integer_value(lease)
                    : DEFAULT_LEASE_MS;
  t->timeout_ms = json_is_integer(tmo) && json_integer_value(tmo) > 0
                      ? (uint64_t)json_integer_value(tmo)
                      : DEFAULT_TASK_TIMEOUT_MS;
  snprintf(t->model, sizeof t->model, "%s",
           json_is_string(model) && json_string_length(model) > 0 ? json_string_value(model)
                                                                   : r->default_model);
  t->backoff_ms = MODEL_BACKOFF_INITIAL_MS;
  bool ok = json_is_string(prompt);
  if (ok)
    t->prompt = strdup(json_string_value(prompt));
  json_decref(j);
  uint64_t i = hb_interval(t->lease_ms);
  if (!r->stopping)
    uv_timer_start(&r->heartbeat, on_heartbeat_timer, i, i);
  if (!ok || t->prompt == NULL) {
    const char *msg = ok ? "out of memory" : "the task's payload has no prompt";
    task_finish(r, false, msg, strlen(msg));
    return false;
  }
  char dur[32];
  stg_info("task %s: claimed; asking %s at %s, model %s, timeout %s, prompt of %zu bytes", t->id,
           r->provider_name, r->base_url, t->model,
           stg_format_duration(t->timeout_ms, dur, sizeof dur), strlen(t->prompt));
  t->deadline = uv_now(r->loop) + t->timeout_ms;
  return true;
}

static void on_claim(stg_curluv_t *c, int err, long status, const char *body, size_t len) {
  (void)len;
  runner_t *r = c->data;
  if (err == UV_ECANCELED)
    return;
  if (r->stopping) {
    /* A task handed out as we stop: give it back at once. */
    if (err == 0 && status == 200 && task_take(r, body))
      report_start(r);
    return;
  }
  if (err == 0 && status == 204) {
    r->backoff_ms = CLAIM_BACKOFF_INITIAL_MS;
    claim_start(r);
    return;
  }
  if (err == 0 && status == 200) {
    r->backoff_ms = CLAIM_BACKOFF_INITIAL_MS;
    if (r->claim_warned)
      stg_info("claim: the server answers again");
    r->claim_warned = false;
    if (task_take(r, body))
      model_call(r);
    else if (!r->task.held)
      backoff(r, on_retry_claim, CLAIM_BACKOFF_MAX_MS);
    return;
  }
  char why[600];
  if (err != 0)
    snprintf(why, sizeof why, "%s", stg_curluv_errmsg(c));
  else {
    char t[500];
    error_text(body, t, sizeof t);
    snprintf(why, sizeof why, "HTTP %ld: %s", status, t);
  }
  /* The first failure of a series is a warning; repeats are debug lines. */
  stg_log(r->claim_warned ? STG_LOG_DEBUG : STG_LOG_WARN,
          "claim: POST %s/v1/tasks/claim: %s; retry in %llu ms", r->server, why,
          (unsigned long long)r->backoff_ms);
  r->claim_warned = true;
  backoff(r, on_retry_claim, CLAIM_BACKOFF_MAX_MS);
}

static void claim_start(runner_t *r) {
  if (r->stopping || r->task.held)
    return;
  char wait[16];
  snprintf(wait, sizeof wait, "%ds", CLAIM_WAIT_S);
  char *body = dump(json_pack("{s:s, s:s, s:s}", "kind", "agent", "worker", r->worker, "wait", wait));
  int rc = body ? server_request(r, &r->claim, "/v1/tasks/claim", body, CLAIM_TIMEOUT_MS, on_claim)
                : UV_ENOMEM;
  if (rc < 0) {
    stg_warn("claim: %s; retry in %llu ms", uv_strerror(rc), (unsigned long long)r->backoff_ms);
    backoff(r, on_retry_claim, CLAIM_BACKOFF_MAX_MS);
  }
}

/* --- setup ------------------------------------------------------------------------- */

/* "host:port", "[v6]:port", optionally after "http://", into r->server.
 * 0 or UV_EINVAL. */
static int parse_addr(runner_t *r, const char *addr) {
  if (strncmp(addr, "http://", 7) == 0)
    addr += 7;
  size_t len = strcspn(addr, "/");
  const char *colon;
  if (addr[0] == '[') {
    const char *close = memchr(addr, ']', len);
    if (close == NULL || close[1] != ':' || close == addr + 1)
      return UV_EINVAL;
    colon = close + 1;
  } else {
    colon = memchr(addr, ':', len);
    if (colon == NULL || colon == addr || memchr(colon + 1, ':', len - (size_t)(colon + 1 - addr)))
      return UV_EINVAL;
  }
  const char *port = colon + 1;
  size_t pl = len - (size_t)(port - addr);
  if (pl == 0 || pl > 5 || strspn(port, "0123456789") < pl)
    return UV_EINVAL;
  long p = strtol(port, NULL, 10);
  if (p < 1 || p > 65535 || len + 8 > sizeof r->server)
    return UV_EINVAL;
  snprintf(r->server, sizeof r->server, "http://%.*s", (int)len, addr);
  return 0;
}

/* Exit with the parent: returns false when it is already gone. */
static bool watch_parent(runner_t *r) {
  const char *sup = getenv("STIGMER_SUPERVISOR_PID");
  if (sup != NULL && *sup != '\0' && atol(sup) != (long)r->ppid)
    return false; /* started by the supervisor, now somebody else's child */
#ifdef __linux__
  if (prctl(PR_SET_PDEATHSIG, SIGHUP) != 0) {
    stg_warn("prctl PR_SET_PDEATHSIG: %s", strerror(errno));
    return true;
  }
  /* The parent may have died between getppid() and prctl(). */
  return getppid() == r->ppid;
#else
  uv_timer_start(&r->ppid_check, on_ppid_check, PPID_POLL_MS, PPID_POLL_MS);
  return getppid() == r->ppid;
#endif
}

/* Provider, base URL, model, CA file and API key from the configuration. */
static int configure(runner_t *r, const stg_config_t *cfg) {
  const char *p = cfg->agent_runner.provider;
  if (p == NULL || strcmp(p, "ollama") == 0) {
    r->provider = PROVIDER_OLLAMA;
    r->provider_name = "ollama";
  } else if (strcmp(p, "openai") == 0) {
    r->provider = PROVIDER_OPENAI;
    r->provider_name = "openai";
  } else {
    stg_error("[agent-runner] provider: expected ollama or openai, got '%s'", p);
    return UV_EINVAL;
  }
  const char *base = cfg->agent_runner.base_url;
  if (base == NULL || *base == '\0')
    base = r->provider == PROVIDER_OLLAMA ? "http://localhost:11434" : "https://api.openai.com";
  if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0) {
    stg_error("[agent-runner] base_url: expected an http:// or https:// URL, got '%s'", base);
    return UV_EINVAL;
  }
  if (strlen(base) >= sizeof r->base_url) {
    stg_error("[agent-runner] base_url: longer than %zu bytes", sizeof r->base_url - 1);
    return UV_EINVAL;
  }
  snprintf(r->base_url, sizeof r->base_url, "%s", base);
  size_t n = strlen(r->base_url);
  while (n > 0 && r->base_url[n - 1] == '/')
    r->base_url[--n] = '\0';
  snprintf(r->default_model, sizeof r->default_model, "%s",
           cfg->agent_runner.model && *cfg->agent_runner.model ? cfg->agent_runner.model
                                                               : "qwen2.5-coder:7b");
  snprintf(r->ca_file, sizeof r->ca_file, "%s",
           cfg->agent_runner.ca_file ? cfg->agent_runner.ca_file : "");
  const char *src = "STIGMER_LLM_API_KEY";
  r->api_key = getenv(src);
  if (r->api_key == NULL || *r->api_key == '\0') {
    src = "OPENAI_API_KEY";
    r->api_key = getenv(src);
  }
  if (r->api_key != NULL && *r->api_key == '\0')
    r->api_key = NULL;
  stg_info("provider %s, base_url %s, default model %s, api key %s%s", r->provider_name,
           r->base_url, r->default_model, r->api_key ? "from " : "not set",
           r->api_key ? src : "");
  return 0;
}

int main(int argc, char **argv) {
  runner_t r;
  memset(&r, 0, sizeof r);
  r.ppid = getppid();
  stg_log_set_name("agent-runner");
  const char *lvl = getenv("STIGMER_LOG_LEVEL");
  stg_log_level_t level;
  if (lvl != NULL && stg_log_level_parse(lvl, &level) == 0)
    stg_log_set_level(level);

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      printf("Usage: agent-runner\n"
             "\n"
             "The reference agent-runner of the Stigmer stack, started by the\n"
             "supervisor. It waits for the server's /healthz, sends READY=1 over\n"
             "$NOTIFY_SOCKET, then claims agent tasks one at a time and answers each\n"
             "by asking a chat model (Ollama or an OpenAI-compatible API). It pings\n"
             "WATCHDOG=1 every half of $WATCHDOG_USEC, and exits 0 on SIGTERM\n"
             "(releasing a task it holds) or when its parent dies.\n"
             "\n"
             "Configuration: $STIGMER_HOME/config.ini [agent-runner] provider,\n"
             "base_url, model, ca_file (and STIGMER_AGENT_RUNNER_* overrides).\n"
             "Environment: STIGMER_SERVER_ADDR (host:port, default [server] listen),\n"
             "STIGMER_LLM_API_KEY or OPENAI_API_KEY, STIGMER_LOG_LEVEL, NOTIFY_SOCKET,\n"
             "WATCHDOG_USEC, STIGMER_SUPERVISOR_PID.\n"
             "Exit status: 0 stopped by a signal or parent exit, 2 bad configuration,\n"
             "1 other failure.\n");
      return 0;
    }
    fprintf(stderr, "agent-runner: unknown argument '%s' (try --help)\n", argv[i]);
    return 2;
  }

  stg_config_t cfg;
  char err[1024] = "";
  int rc = stg_config_init(&cfg, NULL);
  if (rc == 0)
    rc = stg_config_load(&cfg, err, sizeof err);
  if (rc != 0) {
    stg_error("configuration: %s", err[0] ? err : uv_strerror(rc));
    stg_config_free(&cfg);
    return 2;
  }
  stg_log_set_level(cfg.log.level);
  const char *addr = getenv("STIGMER_SERVER_ADDR");
  if (addr == NULL || *addr == '\0')
    addr = cfg.server.listen;
  if (addr == NULL || parse_addr(&r, addr) != 0) {
    stg_error("STIGMER_SERVER_ADDR: expected host:port, got '%s'", addr ? addr : "");
    stg_config_free(&cfg);
    return 2;
  }
  rc = configure(&r, &cfg);
  stg_config_free(&cfg);
  if (rc != 0)
    return 2;
  char host[64] = "localhost";
  gethostname(host, sizeof host - 1);
  snprintf(r.worker, sizeof r.worker, "agent-runner-%s-%ld", host, (long)getpid());

  signal(SIGPIPE, SIG_IGN); /* TLS writes to a closed peer (see curluv.h) */
  r.loop = uv_default_loop();
  r.backoff_ms = HEALTH_BACKOFF_INITIAL_MS;
  uv_signal_init(r.loop, &r.sig_term);
  uv_signal_init(r.loop, &r.sig_int);
  uv_signal_init(r.loop, &r.sig_hup);
  r.sig_term.data = r.sig_int.data = r.sig_hup.data = &r;
  uv_timer_init(r.loop, &r.retry);
  uv_timer_init(r.loop, &r.watchdog);
  uv_timer_init(r.loop, &r.ppid_check);
  uv_timer_init(r.loop, &r.heartbeat);
  uv_timer_init(r.loop, &r.model_retry);
  rc = uv_signal_start(&r.sig_term, on_signal, SIGTERM);
  if (rc == 0)
    rc = uv_signal_start(&r.sig_int, on_signal, SIGINT);
  if (rc == 0)
    rc = uv_signal_start(&r.sig_hup, on_signal, SIGHUP);
  if (rc != 0) {
    stg_error("install signal handlers: %s", uv_strerror(rc));
    return 1;
  }

  stg_info("starting (pid %ld, parent %ld); server %s", (long)getpid(), (long)r.ppid, r.server);

  if (!watch_parent(&r)) {
    stg_info("parent process %ld already exited: exiting", (long)r.ppid);
    return 0;
  }

  r.watchdog_ms = stg_notify_watchdog_ms() / 2;
  if (stg_notify_watchdog_ms() > 0) {
    if (r.watchdog_ms == 0)
      r.watchdog_ms = 1;
    stg_info("watchdog: sending WATCHDOG=1 every %llu ms", (unsigned long long)r.watchdog_ms);
    on_watchdog(&r.watchdog);
    uv_timer_start(&r.watchdog, on_watchdog, r.watchdog_ms, r.watchdog_ms);
  }

  health_start(&r);
  uv_run(r.loop, UV_RUN_DEFAULT);
  task_clear(&r.task);
  rc = uv_loop_close(r.loop);
  if (rc != 0) {
    stg_error("close the loop: %s", uv_strerror(rc));
    return 1;
  }
  return 0;
}
