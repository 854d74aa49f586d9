/* The HTTP API of internal-server. See api.h and docs/api.md. */
#include "api.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "parse.h"
#include "version.h"
#include "workflow.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

#define MAX_WORKER 200
#define MAX_LIMIT 1000

typedef enum { W_EVENTS, W_CLAIM, W_TASK } waiter_kind_t;

struct api_waiter_s {
  api_waiter_t *prev, *next;
  api_t *api;
  stg_http_req_t *req;        /* NULL once answered */
  uv_timer_t timer;           /* the deadline */
  waiter_kind_t kind;
  char id[32];                /* execution (W_EVENTS) or task (W_TASK) */
  int64_t after;              /* W_EVENTS */
  stg_task_kind_t task_kind;  /* W_CLAIM */
  char worker[MAX_WORKER + 1];/* W_CLAIM */
};

/* --- small helpers ----------------------------------------------------------------- */

static void respond_err(stg_http_req_t *req, int status, const char *code, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));
static void respond_err(stg_http_req_t *req, int status, const char *code, const char *fmt,
                        ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  stg_http_respond_error(req, status, code, msg);
}

/* Answers with a store error: 404, 409, 400 or 500. */
static void respond_store(api_t *api, stg_http_req_t *req, int rc) {
  const char *msg = stg_store_errmsg(api->store);
  switch (rc) {
  case UV_ENOENT:
    stg_http_respond_error(req, 404, "not_found", msg);
    break;
  case UV_EBUSY:
    stg_http_respond_error(req, 409, "conflict", msg);
    break;
  case UV_EINVAL:
    stg_http_respond_error(req, 400, "bad_request", msg);
    break;
  default:
    stg_error("%s %s: %s", stg_http_req_method(req), stg_http_req_path(req), msg);
    stg_http_respond_error(req, 500, "internal", msg);
    break;
  }
}

static void respond_take(stg_http_req_t *req, int status, json_t *body) {
  if (body == NULL) {
    stg_http_respond_error(req, 500, "internal", "out of memory");
    return;
  }
  stg_http_respond_json(req, status, body);
  json_decref(body);
}

/* Finds key in a query string ("a=1&b=2") into buf; false when absent. No
 * percent-decoding: every value we take is plain ASCII. */
static bool query_get(const char *q, const char *key, char *buf, size_t len) {
  size_t kn = strlen(key);
  while (q && *q) {
    const char *amp = strchr(q, '&');
    size_t n = amp ? (size_t)(amp - q) : strlen(q);
    if (n > kn && strncmp(q, key, kn) == 0 && q[kn] == '=') {
      size_t vn = n - kn - 1;
      if (vn >= len)
        vn = len - 1;
      memcpy(buf, q + kn + 1, vn);
      buf[vn] = '\0';
      return true;
    }
    if (n == kn && strncmp(q, key, kn) == 0) {
      buf[0] = '\0';
      return true;
    }
    q = amp ? amp + 1 : NULL;
  }
  return false;
}

/* A wait duration ("30s"), capped at API_MAX_WAIT_MS. */
static bool parse_wait(const char *s, uint64_t *ms) {
  uint64_t v;
  if (stg_parse_duration(s, &v) != 0)
    return false;
  *ms = v > API_MAX_WAIT_MS ? API_MAX_WAIT_MS : v;
  return true;
}

/* The request body as a JSON object, or NULL after answering 400. */
static json_t *body_object(stg_http_req_t *req) {
  json_error_t e;
  size_t len;
  stg_http_req_body(req, &len);
  if (len == 0) {
    stg_http_respond_error(req, 400, "bad_request", "expected a JSON object as the body");
    return NULL;
  }
  json_t *j = stg_http_req_json(req, &e);
  if (j == NULL) {
    respond_err(req, 400, "bad_request", "malformed JSON at line %d column %d: %s", e.line,
                e.column, e.text);
    return NULL;
  }
  if (!json_is_object(j)) {
    json_decref(j);
    stg_http_respond_error(req, 400, "bad_request", "expected a JSON object as the body");
    return NULL;
  }
  return j;
}

/* body[key] as a string: required (else 400), or optional (NULL when
 * absent or null). *ok false after answering 400. */
static const char *str_field(stg_http_req_t *req, json_t *body, const char *key, bool required,
                             size_t max, bool *ok) {
  json_t *v = json_object_get(body, key);
  if (v == NULL || json_is_null(v)) {
    if (required) {
      respond_err(req, 400, "bad_request", "%s: required", key);
      *ok = false;
    }
    return NULL;
  }
  if (!json_is_string(v)) {
    respond_err(req, 400, "bad_request", "%s: expected a string", key);
    *ok = false;
    return NULL;
  }
  if (json_string_length(v) > max || strlen(json_string_value(v)) != json_string_length(v)) {
    respond_err(req, 400, "bad_request", "%s: longer than %zu bytes or has a NUL byte", key, max);
    *ok = false;
    return NULL;
  }
  if (required && json_string_length(v) == 0) {
    respond_err(req, 400, "bad_request", "%s: must not be empty", key);
    *ok = false;
    return NULL;
  }
  return json_string_value(v);
}

/* The store, or NULL after answering 503. */
static stg_store_t *need_store(api_t *api, stg_http_req_t *req) {
  if (api->store == NULL || api->closing) {
    stg_http_respond_error(req, 503, "unavailable",
                           api->closing ? "the server is stopping" : "the store is not open yet");
    return NULL;
  }
  return api->store;
}

/* Splits "/v1/<coll>/<id>[/<action>]" after prefix. Returns false when the
 * shape is wrong. */
static bool split_path(const char *path, const char *prefix, char *id, size_t idlen,
                       char *action, size_t alen) {
  size_t pn = strlen(prefix);
  if (strncmp(path, prefix, pn) != 0)
    return false;
  const char *s = path + pn;
  const char *slash = strchr(s, '/');
  size_t n = slash ? (size_t)(slash - s) : strlen(s);
  if (n == 0 || n >= idlen)
    return false;
  memcpy(id, s, n);
  id[n] = '\0';
  action[0] = '\0';
  if (slash) {
    const char *a = slash + 1;
    if (strlen(a) >= alen || strchr(a, '/') || *a == '\0')
      return false;
    snprintf(action, alen, "%s", a);
  }
  return true;
}

/* --- the lease timer --------------------------------------------------------------- */

static void wake_claims(api_t *api, unsigned kinds);
static void on_lease(uv_timer_t *t);

static void arm_lease_timer(api_t *api) {
  if (api->store == NULL || api->closing)
    return;
  int64_t at;
  if (stg_store_next_expiry(api->store, &at) != 0) {
    stg_warn("find the next lease expiry: %s", stg_store_errmsg(api->store));
    return;
  }
  if (at < 0) {
    uv_timer_stop(&api->lease_timer);
    return;
  }
  int64_t delay = at - stg_store_now();
  uv_timer_start(&api->lease_timer, on_lease, delay > 0 ? (uint64_t)delay + 1 : 1, 0);
}

static void on_lease(uv_timer_t *t) {
  api_t *api = container_of(t, api_t, lease_timer);
  unsigned kinds = 0;
  int rc = stg_store_expire_leases(api->store, &kinds);
  if (rc != 0)
    stg_warn("put lapsed leases back: %s", stg_store_errmsg(api->store));
  else if (kinds)
    stg_info("a lease lapsed: task back to pending");
  if (kinds)
    wake_claims(api, kinds);
  arm_lease_timer(api);
}

/* --- waiters ----------------------------------------------------------------------- */

static void waiter_free(uv_handle_t *h) {
  api_waiter_t *w = container_of((uv_timer_t *)h, api_waiter_t, timer);
  api_t *api = w->api;
  free(w);
  api->n_waiters--;
}

/* Takes the waiter off the list and closes it; its request was answered. */
static void waiter_done(api_waiter_t *w) {
  api_t *api = w->api;
  w->req = NULL;
  if (w->prev)
    w->prev->next = w->next;
  else
    api->waiters = w->next;
  if (w->next)
    w->next->prev = w->prev;
  w->prev = w->next = NULL;
  uv_timer_stop(&w->timer);
  uv_close((uv_handle_t *)&w->timer, waiter_free);
}

static void on_waiter_gone(stg_http_req_t *req, void *data) {
  api_waiter_t *w = data;
  stg_http_respond(req, 503, "text/plain", "", 0); /* discarded; frees req */
  waiter_done(w);
}

/* Tries to answer an events waiter; true when it did. final: answer even
 * with no events (the deadline). */
static bool try_events(api_t *api, stg_http_req_t *req, const char *id, int64_t after,
                       bool final) {
  stg_store_events_t ev;
  int rc = stg_store_events(api->store, id, after, &ev);
  if (rc != 0) {
    respond_store(api, req, rc);
    return true;
  }
  if (json_array_size(ev.events) == 0 && !ev.finished && !final) {
    json_decref(ev.events);
    return false;
  }
  respond_take(req, 200, json_pack("{s:o, s:I, s:b}", "events", ev.events, "next",
                                   (json_int_t)ev.next, "finished", ev.finished));
  return true;
}

/* Tries to claim for a claim waiter; true when it answered. */
static bool try_claim(api_t *api, stg_http_req_t *req, stg_task_kind_t kind, const char *worker,
                      bool final);
static bool try_task(api_t *api, stg_http_req_t *req, const char *id, bool final);

static void on_waiter_deadline(uv_timer_t *t) {
  api_waiter_t *w = container_of(t, api_waiter_t, timer);
  stg_http_req_t *req = w->req;
  api_t *api = w->api;
  if (req == NULL)
    return;
  if (api->store == NULL || api->closing) {
    stg_http_respond_error(req, 503, "unavailable", "the server is stopping");
  } else {
    switch (w->kind) {
    case W_EVENTS:
      try_events(api, req, w->id, w->after, true);
      break;
    case W_CLAIM:
      try_claim(api, req, w->task_kind, w->worker, true);
      break;
    case W_TASK:
      try_task(api, req, w->id, true);
      break;
    }
  }
  waiter_done(w);
}

static api_waiter_t *waiter_add(api_t *api, stg_http_req_t *req, waiter_kind_t kind,
                                uint64_t wait_ms) {
  api_waiter_t *w = calloc(1, sizeof *w);
  if (w == NULL) {
    stg_http_respond_error(req, 500, "internal", "out of memory");
    return NULL;
  }
  w->api = api;
  w->req = req;
  w->kind = kind;
  uv_timer_init(api->loop, &w->timer);
  uv_timer_start(&w->timer, on_waiter_deadline, wait_ms, 0);
  w->next = api->waiters;
  if (api->waiters)
    api->waiters->prev = w;
  api->waiters = w;
  api->n_waiters++;
  stg_http_req_on_gone(req, on_waiter_gone, w);
  return w;
}

static void wake_events(api_t *api, const char *exec_id) {
  api_waiter_t *next;
  for (api_waiter_t *w = api->waiters; w; w = next) {
    next = w->next;
    if (w->kind == W_EVENTS && w->req && strcmp(w->id, exec_id) == 0 &&
        try_events(api, w->req, w->id, w->after, false))
      waiter_done(w);
  }
}

static void wake_claims(api_t *api, unsigned kinds) {
  api_waiter_t *next;
  /* oldest waiter first: the list is newest first, so find the tail */
  api_waiter_t *w = api->waiters;
  while (w && w->next)
    w = w->next;
  for (; w; w = next) {
    next = w->prev;
    if (w->kind != W_CLAIM || !w->req || !(kinds & (1u << w->task_kind)))
      continue;
    if (try_claim(api, w->req, w->task_kind, w->worker, false))
      waiter_done(w);
    else
      kinds &= ~(1u << w->task_kind); /* nothing left of that kind */
  }
}

/* id NULL: every task waiter checks. */
static void wake_tasks(api_t *api, const char *id) {
  api_waiter_t *next;
  for (api_waiter_t *w = api->waiters; w; w = next) {
    next = w->next;
    if (w->kind == W_TASK && w->req && (id == NULL || strcmp(w->id, id) == 0) &&
        try_task(api, w->req, w->id, false))
      waiter_done(w);
  }
}

/* --- health ------------------------------------------------------------------------ */

static void handle_healthz(stg_http_req_t *req, void *data) {
  (void)data;
  static const char ok[] = "{\"status\":\"ok\"}";
  stg_http_respond(req, 200, "application/json", ok, sizeof ok - 1);
}

static void handle_readyz(stg_http_req_t *req, void *data) {
  api_t *api = data;
  if (api->store == NULL || api->closing) {
    stg_http_respond_error(req, 503, "unavailable",
                           api->closing ? "the server is stopping" : "the store is not open yet");
    return;
  }
  static const char ok[] = "{\"status\":\"ready\"}";
  stg_http_respond(req, 200, "application/json", ok, sizeof ok - 1);
}

static void handle_version(stg_http_req_t *req, void *data) {
  (void)data;
  respond_take(req, 200, json_pack("{s:s, s:s, s:i}", "version", stg_version(), "commit",
                                   stg_version_commit(), "schema", stg_store_schema_version()));
}

/* --- executions -------------------------------------------------------------------- */

static void handle_exec_submit(stg_http_req_t *req, void *data) {
  api_t *api = data;
  if (need_store(api, req) == NULL)
    return;
  json_t *body = body_object(req);
  if (body == NULL)
    return;
  stg_workflow_t *wf = NULL;
  json_t *resolved = NULL;
  bool ok = true;
  const char *text = str_field(req, body, "workflow", true, STG_WORKFLOW_MAX_TEXT, &ok);
  if (!ok)
    goto out;
  json_t *inputs = json_object_get(body, "inputs");
  if (inputs && !json_is_null(inputs) && !json_is_object(inputs)) {
    stg_http_respond_error(req, 400, "bad_request", "inputs: expected an object of strings");
    goto out;
  }
  const char *key;
  json_t *val;
  char err[1024];
  int rc = stg_workflow_parse(text, strlen(text), "workflow", &wf, err, sizeof err);
  if (rc == UV_ENOMEM) {
    stg_http_respond_error(req, 500, "internal", "out of memory");
    goto out;
  }
  if (rc != 0) {
    stg_http_respond_error(req, 400, "bad_request", err);
    goto out;
  }
  json_object_foreach(inputs, key, val) {
    if (stg_workflow_input(wf, key) == NULL) {
      respond_err(req, 400, "bad_request", "inputs.%.80s: workflow '%s' has no such input",
                  key, wf->name);
      goto out;
    }
    if (!json_is_string(val)) {
      respond_err(req, 400, "bad_request", "inputs.%.80s: expected a string", key);
      goto out;
    }
    if (json_string_length(val) > STG_WORKFLOW_MAX_VALUE ||
        strlen(json_string_value(val)) != json_string_length(val)) {
      respond_err(req, 400, "bad_request", "inputs.%.80s: longer than %u bytes or has a "
                  "NUL byte", key, STG_WORKFLOW_MAX_VALUE);
      goto out;
    }
  }
  resolved = json_object();
  for (unsigned i = 0; i < wf->n_inputs; i++) {
    const stg_workflow_input_t *in = &wf->inputs[i];
    json_t *given = inputs ? json_object_get(inputs, in->name) : NULL;
    if (given) {
      json_object_set(resolved, in->name, given);
    } else if (in->default_value) {
      json_object_set_new(resolved, in->name, json_string(in->default_value));
    } else {
      respond_err(req, 400, "bad_request", "inputs.%s: required (workflow '%s' gives it no "
                  "default)", in->name, wf->name);
      goto out;
    }
  }
  stg_store_id_t id;
  stg_store_submit_t sub = {wf, text, resolved};
  rc = stg_store_exec_create(api->store, &sub, &id);
  if (rc != 0) {
    respond_store(api, req, rc);
    goto out;
  }
  stg_debug("execution %s of '%s' accepted", id.s, wf->name);
  respond_take(req, 201, json_pack("{s:s, s:s, s:s}", "id", id.s, "state", "pending", "name",
                                   wf->name));
  wake_claims(api, 1u << STG_TASK_WORKFLOW);
out:
  stg_workflow_free(wf);
  json_decref(resolved);
  json_decref(body);
}

static const char *const exec_states[] = {"pending", "running", "succeeded", "failed",
                                          "cancelled", NULL};

static void handle_exec_list(stg_http_req_t *req, void *data) {
  api_t *api = data;
  if (need_store(api, req) == NULL)
    return;
  const char *q = stg_http_req_query(req);
  char buf[64];
  int64_t limit = 20;
  if (query_get(q, "limit", buf, sizeof buf) &&
      stg_parse_int(buf, 1, MAX_LIMIT, &limit) != 0) {
    respond_err(req, 400, "bad_request", "limit: expected an integer from 1 to %d", MAX_LIMIT);
    return;
  }
  const char *state = NULL;
  if (query_get(q, "state", buf, sizeof buf)) {
    for (const char *const *s = exec_states; *s; s++)
      if (strcmp(*s, buf) == 0)
        state = *s;
    if (state == NULL) {
      stg_http_respond_error(req, 400, "bad_request", "state: expected pending, running, "
                             "succeeded, failed or cancelled");
      return;
    }
  }
  json_t *list = NULL;
  int rc = stg_store_exec_list(api->store, (int)limit, state, &list);
  if (rc != 0) {
    respond_store(api, req, rc);
    return;
  }
  respond_take(req, 200, json_pack("{s:o}", "executions", list));
}

static void exec_events(api_t *api, stg_http_req_t *req, const char *id) {
  const char *q = stg_http_req_query(req);
  char buf[64];
  int64_t after = 0;
  uint64_t wait = 0;
  if (query_get(q, "after", buf, sizeof buf) &&
      stg_parse_int(buf, 0, INT64_MAX, &after) != 0) {
    stg_http_respond_error(req, 400, "bad_request", "after: expected a non-negative integer");
    return;
  }
  if (query_get(q, "wait", buf, sizeof buf) && !parse_wait(buf, &wait)) {
    stg_http_respond_error(req, 400, "bad_request", "wait: expected a duration such as 30s");
    return;
  }
  if (try_events(api, req, id, after, wait == 0))
    return;
  api_waiter_t *w = waiter_add(api, req, W_EVENTS, wait);
  if (w) {
    snprintf(w->id, sizeof w->id, "%s", id);
    w->after = after;
  }
}

static void handle_exec_get(stg_http_req_t *req, void *data) {
  api_t *api = data;
  char id[32], action[32];
  if (!split_path(stg_http_req_path(req), "/v1/executions/", id, sizeof id, action,
                  sizeof action)) {
    respond_err(req, 404, "not_found", "GET %.200s: no such resource", stg_http_req_path(req));
    return;
  }
  if (strcmp(action, "cancel") == 0) {
    stg_http_req_add_header(req, "Allow", "POST");
    stg_http_respond_error(req, 405, "method_not_allowed", "cancel: use POST");
    return;
  }
  if (action[0] != '\0' && strcmp(action, "events") != 0) {
    respond_err(req, 404, "not_found", "GET %.200s: no such resource", stg_http_req_path(req));
    return;
  }
  if (need_store(api, req) == NULL)
    return;
  if (action[0] != '\0') {
    exec_events(api, req, id);
    return;
  }
  json_t *e = NULL;
  int rc = stg_store_exec_get(api->store, id, &e);
  if (rc != 0) {
    respond_store(api, req, rc);
    return;
  }
  respond_take(req, 200, e);
}

static void handle_exec_post(stg_http_req_t *req, void *data) {
  api_t *api = data;
  char id[32], action[32];
  if (!split_path(stg_http_req_path(req), "/v1/executions/", id, sizeof id, action,
                  sizeof action) ||
      (strcmp(action, "cancel") != 0 && strcmp(action, "events") != 0 && action[0] != '\0')) {
    respond_err(req, 404, "not_found", "POST %.200s: no such resource", stg_http_req_path(req));
    return;
  }
  if (strcmp(action, "cancel") != 0) {
    stg_http_req_add_header(req, "Allow", "GET");
    stg_http_respond_error(req, 405, "method_not_allowed", "use GET");
    return;
  }
  if (need_store(api, req) == NULL)
    return;
  json_t *sum = NULL;
  int rc = stg_store_exec_cancel(api->store, id, &sum);
  if (rc != 0) {
    respond_store(api, req, rc);
    return;
  }
  stg_info("execution %s cancelled", id);
  respond_take(req, 200, sum);
  wake_events(api, id);
  wake_tasks(api, NULL);
}

/* --- tasks ------------------------------------------------------------------------- */

static bool try_claim(api_t *api, stg_http_req_t *req, stg_task_kind_t kind, const char *worker,
                      bool final) {
  json_t *task = NULL;
  stg_store_id_t ex;
  stg_store_claim_t claim = {kind, worker, api->lease_ms};
  int rc = stg_store_task_claim(api->store, &claim, &task, &ex);
  if (rc != 0) {
    respond_store(api, req, rc);
    return true;
  }
  if (task == NULL) {
    if (!final)
      return false;
    stg_http_respond(req, 204, "application/json", "", 0);
    return true;
  }
  stg_debug("task %s claimed by '%s'", json_string_value(json_object_get(task, "id")), worker);
  respond_take(req, 200, json_pack("{s:o}", "task", task));
  arm_lease_timer(api);
  if (kind == STG_TASK_WORKFLOW)
    wake_events(api, ex.s);
  return true;
}

static bool try_task(api_t *api, stg_http_req_t *req, const char *id, bool final) {
  json_t *t = NULL;
  bool fin = false;
  int rc = stg_store_task_get(api->store, id, &t, &fin);
  if (rc != 0) {
    respond_store(api, req, rc);
    return true;
  }
  if (!fin && !final) {
    json_decref(t);
    return false;
  }
  respond_take(req, 200, t);
  return true;
}

static bool parse_kind(const char *s, stg_task_kind_t *k) {
  if (strcmp(s, "workflow") == 0)
    *k = STG_TASK_WORKFLOW;
  else if (strcmp(s, "agent") == 0)
    *k = STG_TASK_AGENT;
  else
    return false;
  return true;
}

static void task_claim(api_t *api, stg_http_req_t *req) {
  json_t *body = body_object(req);
  if (body == NULL)
    return;
  bool ok = true;
  const char *kind_s = str_field(req, body, "kind", true, 16, &ok);
  const char *worker = ok ? str_field(req, body, "worker", true, MAX_WORKER, &ok) : NULL;
  const char *wait_s = ok ? str_field(req, body, "wait", false, 32, &ok) : NULL;
  stg_task_kind_t kind;
  uint64_t wait = 0;
  if (!ok)
    goto out;
  if (!parse_kind(kind_s, &kind)) {
    stg_http_respond_error(req, 400, "bad_request", "kind: expected \"workflow\" or \"agent\"");
    goto out;
  }
  if (wait_s && !parse_wait(wait_s, &wait)) {
    stg_http_respond_error(req, 400, "bad_request", "wait: expected a duration such as 30s");
    goto out;
  }
  unsigned kinds;
  if (stg_store_expire_leases(api->store, &kinds) != 0)
    stg_warn("put lapsed leases back: %s", stg_store_errmsg(api->store));
  if (try_claim(api, req, kind, worker, wait == 0))
    goto out;
  api_waiter_t *w = waiter_add(api, req, W_CLAIM, wait);
  if (w) {
    w->task_kind = kind;
    snprintf(w->worker, sizeof w->worker, "%s", worker);
  }
out:
  json_decref(body);
}

static void task_action(api_t *api, stg_http_req_t *req, const char *id, const char *action) {
  json_t *body = body_object(req);
  if (body == NULL)
    return;
  bool ok = true;
  const char *worker = str_field(req, body, "worker", true, MAX_WORKER, &ok);
  if (!ok)
    goto out;
  stg_store_lease_t lease = {id, worker};
  stg_store_id_t ex;
  int rc;
  if (strcmp(action, "heartbeat") == 0) {
    bool cancelled = false;
    rc = stg_store_task_heartbeat(api->store, &lease, api->lease_ms, &cancelled);
    if (rc != 0) {
      respond_store(api, req, rc);
      goto out;
    }
    respond_take(req, 200, json_pack("{s:I, s:b}", "lease_ms", (json_int_t)api->lease_ms,
                                     "cancelled", cancelled));
    arm_lease_timer(api);
  } else if (strcmp(action, "events") == 0) {
    json_t *events = json_object_get(body, "events");
    if (!json_is_array(events)) {
      stg_http_respond_error(req, 400, "bad_request", "events: expected an array");
      goto out;
    }
    stg_store_appended_t app;
    rc = stg_store_task_events(api->store, &lease, events, &app);
    if (rc != 0) {
      respond_store(api, req, rc);
      goto out;
    }
    respond_take(req, 200, json_pack("{s:I}", "next", (json_int_t)app.next));
    wake_events(api, app.exec.s);
  } else if (strcmp(action, "complete") == 0) {
    const char *state = str_field(req, body, "state", true, 16, &ok);
    const char *error = ok ? str_field(req, body, "error", false, 64 * 1024, &ok) : NULL;
    const char *output = ok ? str_field(req, body, "output", false, 1u << 20, &ok) : NULL;
    if (!ok)
      goto out;
    stg_store_result_t result = {state, error, output};
    rc = stg_store_task_complete(api->store, &lease, &result, &ex);
    if (rc != 0) {
      respond_store(api, req, rc);
      goto out;
    }
    respond_take(req, 200, json_pack("{s:s, s:s}", "id", id, "state", state));
    wake_events(api, ex.s);
    wake_tasks(api, NULL);
    arm_lease_timer(api);
  } else if (strcmp(action, "release") == 0) {
    stg_task_kind_t kind;
    rc = stg_store_task_release(api->store, &lease, &kind);
    if (rc != 0) {
      respond_store(api, req, rc);
      goto out;
    }
    respond_take(req, 200, json_pack("{s:s}", "id", id));
    wake_claims(api, 1u << kind);
    wake_tasks(api, id);
    arm_lease_timer(api);
  } else {
    respond_err(req, 404, "not_found", "POST %.200s: no such resource", stg_http_req_path(req));
  }
out:
  json_decref(body);
}

static void handle_task_post(stg_http_req_t *req, void *data) {
  api_t *api = data;
  char id[32], action[32];
  if (!split_path(stg_http_req_path(req), "/v1/tasks/", id, sizeof id, action, sizeof action)) {
    respond_err(req, 404, "not_found", "POST %.200s: no such resource", stg_http_req_path(req));
    return;
  }
  if (strcmp(id, "claim") == 0 && action[0] == '\0') {
    if (need_store(api, req))
      task_claim(api, req);
    return;
  }
  if (action[0] == '\0') {
    stg_http_req_add_header(req, "Allow", "GET");
    stg_http_respond_error(req, 405, "method_not_allowed", "use GET");
    return;
  }
  if (need_store(api, req))
    task_action(api, req, id, action);
}

static void handle_task_get(stg_http_req_t *req, void *data) {
  api_t *api = data;
  char id[32], action[32];
  if (!split_path(stg_http_req_path(req), "/v1/tasks/", id, sizeof id, action, sizeof action) ||
      action[0] != '\0') {
    respond_err(req, 404, "not_found", "GET %.200s: no such resource", stg_http_req_path(req));
    return;
  }
  if (need_store(api, req) == NULL)
    return;
  char buf[64];
  uint64_t wait = 0;
  if (query_get(stg_http_req_query(req), "wait", buf, sizeof buf) && !parse_wait(buf, &wait)) {
    stg_http_respond_error(req, 400, "bad_request", "wait: expected a duration such as 30s");
    return;
  }
  if (try_task(api, req, id, wait == 0))
    return;
  api_waiter_t *w = waiter_add(api, req, W_TASK, wait);
  if (w)
    snprintf(w->id, sizeof w->id, "%s", id);
}

static void handle_task_create(stg_http_req_t *req, void *data) {
  api_t *api = data;
  if (need_store(api, req) == NULL)
    return;
  json_t *body = body_object(req);
  if (body == NULL)
    return;
  bool ok = true;
  stg_store_agent_task_t o = {0};
  const char *kind = str_field(req, body, "kind", true, 16, &ok);
  if (ok && strcmp(kind, "agent") != 0) {
    stg_http_respond_error(req, 400, "bad_request", "kind: only \"agent\" tasks are created "
                           "this way");
    goto out;
  }
  o.execution_id = ok ? str_field(req, body, "execution_id", true, 64, &ok) : NULL;
  o.step = ok ? str_field(req, body, "step", true, STG_WORKFLOW_MAX_NAME, &ok) : NULL;
  o.prompt = ok ? str_field(req, body, "prompt", true, STG_WORKFLOW_MAX_PROMPT, &ok) : NULL;
  o.model = ok ? str_field(req, body, "model", false, 256, &ok) : NULL;
  if (!ok)
    goto out;
  json_t *t = json_object_get(body, "timeout_ms");
  if (t && !json_is_null(t)) {
    if (!json_is_integer(t) || json_integer_value(t) < 0) {
      stg_http_respond_error(req, 400, "bad_request", "timeout_ms: expected a non-negative "
                             "integer");
      goto out;
    }
    o.timeout_ms = json_integer_value(t);
  }
  stg_store_id_t id;
  int rc = stg_store_task_create_agent(api->store, &o, &id);
  if (rc != 0) {
    respond_store(api, req, rc);
    goto out;
  }
  respond_take(req, 201, json_pack("{s:s}", "id", id.s));
  wake_claims(api, 1u << STG_TASK_AGENT);
out:
  json_decref(body);
}

/* --- setup ------------------------------------------------------------------------- */

void api_init(api_t *api, uv_loop_t *loop, uint64_t lease_ms) {
  memset(api, 0, sizeof *api);
  api->loop = loop;
  api->lease_ms = lease_ms ? lease_ms : 30000;
  uv_timer_init(loop, &api->lease_timer);
  const stg_http_route_t r[API_N_ROUTES] = {
      {"GET", "/healthz", handle_healthz, api},
      {"GET", "/readyz", handle_readyz, api},
      {"GET", "/v1/version", handle_version, api},
      {"GET", "/v1/executions", handle_exec_list, api},
      {"POST", "/v1/executions", handle_exec_submit, api},
      {"GET", "/v1/executions/*", handle_exec_get, api},
      {"POST", "/v1/executions/*", handle_exec_post, api},
      {"POST", "/v1/tasks", handle_task_create, api},
      {"GET", "/v1/tasks/*", handle_task_get, api},
      {"POST", "/v1/tasks/*", handle_task_post, api},
      {"HEAD", "/healthz", handle_healthz, api},
      {"HEAD", "/readyz", handle_readyz, api},
  };
  memcpy(api->routes, r, sizeof r);
}

const stg_http_route_t *api_routes(const api_t *api, unsigned *n) {
  *n = API_N_ROUTES;
  return api->routes;
}

void api_set_store(api_t *api, stg_store_t *store) {
  api->store = store;
  /* leases granted before a restart lapse on their own schedule */
  arm_lease_timer(api);
}

static void on_lease_timer_closed(uv_handle_t *h) {
  api_t *api = container_of((uv_timer_t *)h, api_t, lease_timer);
  api->store = NULL; /* the caller closes it in the callback */
  if (api->closed_cb)
    api->closed_cb(api);
}

void api_close(api_t *api, void (*cb)(api_t *api)) {
  api->closing = true;
  api->closed_cb = cb;
  while (api->waiters) {
    api_waiter_t *w = api->waiters;
    if (w->req)
      stg_http_respond_error(w->req, 503, "unavailable", "the server is stopping");
    waiter_done(w);
  }
  /* the waiters' timers close before this one: libuv runs close callbacks
   * in order */
  uv_close((uv_handle_t *)&api->lease_timer, on_lease_timer_closed);
}
