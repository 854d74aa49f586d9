/* Fake servers of the test helper (see helper.c for the mode list):
 *
 *   fake-llm PORT PORTFILE MODE
 *       a chat model on 127.0.0.1:PORT (0: any free port, written to
 *       PORTFILE). Answers POST /api/chat (Ollama) and POST
 *       /v1/chat/completions (OpenAI) with the reply "echo[MODEL]: PROMPT"
 *       (the last message's content). Each request is appended to
 *       PORTFILE.log as "METHOD PATH model=M auth=<Authorization or -> status=S".
 *       MODE: ok | 500-then-ok | 429-then-ok | always-500 | 401 | 404-model |
 *       bad-json | slow:MS (answers after MS ms).
 *
 *   fake-tasks PORT PORTFILE [LEASE_MS]
 *       the task endpoints of docs/api.md, in memory: POST /v1/tasks,
 *       POST /v1/tasks/claim (long poll), .../heartbeat, .../complete,
 *       .../release, GET /v1/tasks/{id}, GET /healthz. Events are appended
 *       to PORTFILE.log ("claim tk_..", "heartbeat tk_..", "complete tk_..
 *       succeeded", "release tk_.."). Test hooks in the prompt: "LOSE-LEASE"
 *       makes heartbeats answer 409, "CANCEL-ME" makes them say cancelled.
 *
 * Both exit 0 on SIGTERM or SIGINT.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "http.h"
#include "parse.h"

int stg_helper_fake_llm(int argc, char **argv);
int stg_helper_fake_tasks(int argc, char **argv);

static stg_http_server_t srv;
static uv_signal_t sig_term, sig_int;
static char logpath[4096];

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...) {
  FILE *f = fopen(logpath, "a");
  if (f == NULL)
    return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fputc('\n', f);
  fclose(f);
}

static void on_sig(uv_signal_t *s, int signum) {
  (void)signum;
  (void)s;
  uv_close((uv_handle_t *)&sig_term, NULL);
  uv_close((uv_handle_t *)&sig_int, NULL);
  stg_http_server_shutdown(&srv, NULL);
  stg_http_server_abort(&srv);
}

static int write_port(const char *portfile) {
  char addr[64];
  if (stg_http_server_address(&srv, addr, sizeof addr) != 0)
    return -1;
  const char *colon = strrchr(addr, ':');
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", portfile);
  FILE *f = fopen(tmp, "w");
  if (f == NULL)
    return -1;
  fprintf(f, "%s\n", colon + 1);
  if (fclose(f) != 0)
    return -1;
  return rename(tmp, portfile);
}

static int serve(uv_loop_t *loop, const char *port, const char *portfile,
                 const stg_http_route_t *routes, unsigned n) {
  snprintf(logpath, sizeof logpath, "%s.log", portfile);
  stg_http_options_t o;
  memset(&o, 0, sizeof o);
  o.routes = routes;
  o.n_routes = n;
  if (stg_http_server_init(loop, &srv, &o) != 0)
    return 4;
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%s", port);
  int rc = stg_http_server_listen(&srv, addr);
  if (rc != 0) {
    fprintf(stderr, "fake server: listen %s: %s\n", addr, uv_strerror(rc));
    stg_http_server_shutdown(&srv, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    return 5;
  }
  if (write_port(portfile) != 0)
    return 6;
  uv_signal_init(loop, &sig_term);
  uv_signal_init(loop, &sig_int);
  uv_signal_start(&sig_term, on_sig, SIGTERM);
  uv_signal_start(&sig_int, on_sig, SIGINT);
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop) == 0 ? 0 : 7;
}

/* --- fake-llm ------------------------------------------------------------------ */

static const char *llm_mode;
static unsigned llm_requests;

typedef struct {
  uv_timer_t timer;
  stg_http_req_t *req;
  char *body;
} delayed_t;

static void delayed_closed(uv_handle_t *h) {
  delayed_t *d = h->data;
  free(d->body);
  free(d);
}

static void on_delayed(uv_timer_t *t) {
  delayed_t *d = t->data;
  uv_timer_stop(t);
  stg_http_respond(d->req, 200, "application/json", d->body, strlen(d->body));
  uv_close((uv_handle_t *)t, delayed_closed);
}

static void delayed_gone(stg_http_req_t *req, void *data) {
  (void)req;
  on_delayed(&((delayed_t *)data)->timer);
}

static void llm_handler(stg_http_req_t *req, void *data) {
  bool openai = data != NULL;
  json_error_t jerr;
  json_t *in = stg_http_req_json(req, &jerr);
  const char *model = "-";
  const char *prompt = "";
  const char *auth = stg_http_req_header(req, "Authorization");
  json_t *msgs = in ? json_object_get(in, "messages") : NULL;
  if (in != NULL && json_is_string(json_object_get(in, "model")))
    model = json_string_value(json_object_get(in, "model"));
  size_t nm = json_array_size(msgs);
  if (nm > 0) {
    json_t *c = json_object_get(json_array_get(msgs, nm - 1), "content");
    if (json_is_string(c))
      prompt = json_string_value(c);
  }
  llm_requests++;
  int status = 200;
  const char *err_body = NULL;
  long delay = 0;
  if (in == NULL || nm == 0) {
    status = 400;
    err_body = "{\"error\":\"bad request: no messages\"}";
  } else if (!openai && !json_is_false(json_object_get(in, "stream"))) {
    status = 400;
    err_body = "{\"error\":\"this fake wants stream: false\"}";
  } else if (strcmp(llm_mode, "500-then-ok") == 0 && llm_requests == 1) {
    status = 500;
    err_body = "{\"error\":\"temporarily broken\"}";
  } else if (strcmp(llm_mode, "429-then-ok") == 0 && llm_requests == 1) {
    status = 429;
    err_body = "{\"error\":{\"message\":\"Rate limit reached\"}}";
  } else if (strcmp(llm_mode, "always-500") == 0) {
    status = 500;
    err_body = "{\"error\":\"always broken\"}";
  } else if (strcmp(llm_mode, "401") == 0) {
    status = 401;
    err_body = "{\"error\":{\"message\":\"Incorrect API key provided.\",\"type\":"
               "\"invalid_request_error\",\"code\":\"invalid_api_key\"}}";
  } else if (strcmp(llm_mode, "404-model") == 0) {
    status = 404;
    err_body = "{\"error\":\"model 'nope' not found, try pulling it first\"}";
  } else if (strcmp(llm_mode, "bad-json") == 0) {
    err_body = "this is not json";
  } else if (strncmp(llm_mode, "slow:", 5) == 0) {
    delay = atol(llm_mode + 5);
  }
  log_line("%s %s model=%s auth=%s status=%d", stg_http_req_method(req), stg_http_req_path(req),
           model, auth ? auth : "-", status);
  if (err_body != NULL) {
    stg_http_respond(req, status, "application/json", err_body, strlen(err_body));
    json_decref(in);
    return;
  }
  char content[8192];
  snprintf(content, sizeof content, "echo[%s]: %s", model, prompt);
  json_t *out;
  if (openai)
    out = json_pack("{s:s, s:[{s:i, s:{s:s, s:s}, s:s}]}", "object", "chat.completion", "choices",
                    "index", 0, "message", "role", "assistant", "content", content,
                    "finish_reason", "stop");
  else
    out = json_pack("{s:s, s:{s:s, s:s}, s:b}", "model", model, "message", "role", "assistant",
                    "content", content, "done", 1);
  json_decref(in);
  char *s = json_dumps(out, JSON_COMPACT);
  json_decref(out);
  if (delay > 0) {
    delayed_t *d = calloc(1, sizeof *d);
    d->req = req;
    d->body = s;
    d->timer.data = d;
    uv_timer_init(srv.loop, &d->timer);
    uv_timer_start(&d->timer, on_delayed, (uint64_t)delay, 0);
    stg_http_req_on_gone(req, delayed_gone, d);
    return;
  }
  stg_http_respond(req, 200, "application/json", s, strlen(s));
  free(s);
}

int stg_helper_fake_llm(int argc, char **argv) {
  if (argc < 5)
    return 2;
  llm_mode = argv[4];
  static int openai_tag = 1;
  static const stg_http_route_t routes[] = {
      {"POST", "/api/chat", llm_handler, NULL},
      {"POST", "/v1/chat/completions", llm_handler, &openai_tag},
  };
  return serve(uv_default_loop(), argv[2], argv[3], routes, 2);
}

/* --- fake-tasks ---------------------------------------------------------------- */

enum { MAX_TASKS = 64, MAX_CLAIMS = 8 };

typedef struct {
  char id[24];
  char state[16]; /* pending leased succeeded failed cancelled */
  json_t *payload;
  char *output;
  char *error;
  char worker[128];
} task_t;

typedef struct {
  uv_timer_t timer;
  stg_http_req_t *req;
  bool used;
  char worker[128];
} claim_t;

static task_t tasks[MAX_TASKS];
static unsigned n_tasks;
static claim_t claims[MAX_CLAIMS];
static uint64_t lease_ms = 30000;

static task_t *task_find(const char *id) {
  for (unsigned i = 0; i < n_tasks; i++)
    if (strcmp(tasks[i].id, id) == 0)
      return &tasks[i];
  return NULL;
}

static void give_task(stg_http_req_t *req, task_t *t, const char *worker) {
  snprintf(t->state, sizeof t->state, "leased");
  snprintf(t->worker, sizeof t->worker, "%s", worker);
  json_t *o = json_pack("{s:{s:s, s:s, s:s, s:I, s:O}}", "task", "id", t->id, "kind", "agent",
                        "execution_id", "ex_0000000000000001", "lease_ms", (json_int_t)lease_ms,
                        "payload", t->payload);
  log_line("claim %s worker=%s", t->id, worker);
  stg_http_respond_json(req, 200, o);
  json_decref(o);
}

static task_t *next_pending(void) {
  for (unsigned i = 0; i < n_tasks; i++)
    if (strcmp(tasks[i].state, "pending") == 0)
      return &tasks[i];
  return NULL;
}

static void claim_closed(uv_handle_t *h) { ((claim_t *)h->data)->used = false; }

static void claim_end(claim_t *c, task_t *t) {
  if (t != NULL && !stg_http_req_gone(c->req))
    give_task(c->req, t, c->worker);
  else
    stg_http_respond(c->req, 204, "application/json", "", 0);
  c->req = NULL;
  uv_close((uv_handle_t *)&c->timer, claim_closed);
}

static void on_claim_timeout(uv_timer_t *t) { claim_end(t->data, NULL); }

static void wake_claims(void) {
  for (unsigned i = 0; i < MAX_CLAIMS; i++) {
    task_t *t = next_pending();
    if (t == NULL)
      return;
    if (claims[i].used && claims[i].req != NULL)
      claim_end(&claims[i], t);
  }
}

static void claim_gone(stg_http_req_t *req, void *data) {
  (void)req;
  claim_t *c = data;
  uv_timer_stop(&c->timer);
  stg_http_respond(c->req, 204, "application/json", "", 0);
  c->req = NULL;
  uv_close((uv_handle_t *)&c->timer, claim_closed);
}

static void h_claim(stg_http_req_t *req, void *data) {
  (void)data;
  json_error_t jerr;
  json_t *in = stg_http_req_json(req, &jerr);
  const char *kind = json_string_value(json_object_get(in, "kind"));
  const char *worker = json_string_value(json_object_get(in, "worker"));
  const char *wait = json_string_value(json_object_get(in, "wait"));
  uint64_t wait_ms = 0;
  if (kind == NULL || strcmp(kind, "agent") != 0 || worker == NULL ||
      (wait != NULL && stg_parse_duration(wait, &wait_ms) != 0)) {
    stg_http_respond_error(req, 400, "bad_request", "claim: kind agent, worker and wait wanted");
    json_decref(in);
    return;
  }
  task_t *t = next_pending();
  if (t != NULL) {
    give_task(req, t, worker);
  } else {
    claim_t *c = NULL;
    for (unsigned i = 0; i < MAX_CLAIMS && c == NULL; i++)
      if (!claims[i].used)
        c = &claims[i];
    if (c == NULL || wait_ms == 0) {
      stg_http_respond(req, 204, "application/json", "", 0);
    } else {
      c->used = true;
      c->req = req;
      snprintf(c->worker, sizeof c->worker, "%s", worker);
      c->timer.data = c;
      uv_timer_init(srv.loop, &c->timer);
      uv_timer_start(&c->timer, on_claim_timeout, wait_ms > 60000 ? 60000 : wait_ms, 0);
      stg_http_req_on_gone(req, claim_gone, c);
    }
  }
  json_decref(in);
}

static void h_create(stg_http_req_t *req, void *data) {
  (void)data;
  json_error_t jerr;
  json_t *in = stg_http_req_json(req, &jerr);
  if (in == NULL || !json_is_string(json_object_get(in, "prompt")) || n_tasks == MAX_TASKS) {
    stg_http_respond_error(req, 400, "bad_request", "create: prompt wanted");
    json_decref(in);
    return;
  }
  task_t *t = &tasks[n_tasks++];
  snprintf(t->id, sizeof t->id, "tk_%016x", n_tasks);
  snprintf(t->state, sizeof t->state, "pending");
  t->payload = json_object();
  const char *keys[] = {"step", "prompt", "model", "timeout_ms"};
  for (unsigned i = 0; i < 4; i++) {
    json_t *v = json_object_get(in, keys[i]);
    if (v != NULL)
      json_object_set(t->payload, keys[i], v);
  }
  json_decref(in);
  json_t *o = json_pack("{s:s}", "id", t->id);
  stg_http_respond_json(req, 201, o);
  json_decref(o);
  wake_claims();
}

static void h_get(stg_http_req_t *req, void *data) {
  (void)data;
  task_t *t = task_find(stg_http_req_path(req) + strlen("/v1/tasks/"));
  if (t == NULL) {
    stg_http_respond_error(req, 404, "not_found", "no such task");
    return;
  }
  json_t *o = json_pack("{s:s, s:s, s:s, s:s?, s:s?}", "id", t->id, "kind", "agent", "state",
                        t->state, "output", t->output, "error", t->error);
  stg_http_respond_json(req, 200, o);
  json_decref(o);
}

static void h_task_post(stg_http_req_t *req, void *data) {
  (void)data;
  char id[64];
  const char *p = stg_http_req_path(req) + strlen("/v1/tasks/");
  const char *slash = strchr(p, '/');
  if (slash == NULL || (size_t)(slash - p) >= sizeof id) {
    stg_http_respond_error(req, 404, "not_found", "no such route");
    return;
  }
  memcpy(id, p, (size_t)(slash - p));
  id[slash - p] = '\0';
  const char *verb = slash + 1;
  task_t *t = task_find(id);
  json_error_t jerr;
  json_t *in = stg_http_req_json(req, &jerr);
  const char *worker = json_string_value(json_object_get(in, "worker"));
  if (t == NULL || worker == NULL) {
    stg_http_respond_error(req, 404, "not_found", "no such task, or no worker");
    json_decref(in);
    return;
  }
  const char *prompt = json_string_value(json_object_get(t->payload, "prompt"));
  bool lose = prompt && strstr(prompt, "LOSE-LEASE") != NULL;
  bool cancel = prompt && strstr(prompt, "CANCEL-ME") != NULL;
  log_line("%s %s", verb, id);
  if (strcmp(t->state, "leased") != 0 || (lose && strcmp(verb, "heartbeat") == 0)) {
    stg_http_respond_error(req, 409, "conflict", "the lease is not yours");
  } else if (strcmp(verb, "heartbeat") == 0) {
    if (cancel)
      snprintf(t->state, sizeof t->state, "cancelled");
    json_t *o = json_pack("{s:I, s:b}", "lease_ms", (json_int_t)lease_ms, "cancelled", cancel);
    stg_http_respond_json(req, 200, o);
    json_decref(o);
  } else if (strcmp(verb, "complete") == 0) {
    const char *state = json_string_value(json_object_get(in, "state"));
    const char *out = json_string_value(json_object_get(in, "output"));
    const char *err = json_string_value(json_object_get(in, "error"));
    snprintf(t->state, sizeof t->state, "%s", state ? state : "bogus");
    t->output = out ? strdup(out) : NULL;
    t->error = err ? strdup(err) : NULL;
    log_line("completed %s %s", id, t->state);
    stg_http_respond(req, 200, "application/json", "{}", 2);
  } else if (strcmp(verb, "release") == 0) {
    snprintf(t->state, sizeof t->state, "pending");
    stg_http_respond(req, 200, "application/json", "{}", 2);
  } else {
    stg_http_respond_error(req, 404, "not_found", "no such route");
  }
  json_decref(in);
}

static void h_health(stg_http_req_t *req, void *data) {
  (void)data;
  stg_http_respond(req, 200, "application/json", "{\"status\":\"ok\"}", 15);
}

int stg_helper_fake_tasks(int argc, char **argv) {
  if (argc < 4)
    return 2;
  if (argc >= 5)
    lease_ms = (uint64_t)atol(argv[4]);
  static const stg_http_route_t routes[] = {
      {"GET", "/healthz", h_health, NULL},
      {"POST", "/v1/tasks", h_create, NULL},
      {"POST", "/v1/tasks/claim", h_claim, NULL},
      {"POST", "/v1/tasks/*", h_task_post, NULL},
      {"GET", "/v1/tasks/*", h_get, NULL},
  };
  return serve(uv_default_loop(), argv[2], argv[3], routes, 5);
}
