/* stigmer run FILE.ini, and stigmer executions list|show|cancel|logs: the
 * CLI's side of the API server (docs/api.md). Blocking: each request runs
 * a private uv loop with stg_http_request until it is answered. Behaviour
 * and output: docs/run.md. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "cli.h"
#include "http.h"
#include "parse.h"
#include "workflow.h"

static const char run_usage[] =
    "Usage: stigmer run FILE.ini [--input NAME=VALUE]... [--detach]\n"
    "\n"
    "Run a workflow: check FILE.ini, start the daemon if it is not running,\n"
    "submit the workflow with its inputs, print the execution's id, then\n"
    "print its steps and their output as they happen, until it finishes.\n"
    "\n"
    "  -i, --input NAME=VALUE  a value for the input NAME (repeatable); a step\n"
    "                          reads it as $STIGMER_INPUT_<NAME>, never as\n"
    "                          part of its command\n"
    "  -d, --detach            print the execution's id and exit\n"
    "\n"
    "Ctrl-C cancels the execution. See docs/run.md.\n"
    "Exit status: 0 succeeded (or submitted, with --detach), 1 failed or\n"
    "cancelled, or the daemon could not be reached, 2 usage error or a bad\n"
    "workflow file (FILE:LINE: ...), 130 interrupted with Ctrl-C.\n";

static const char exec_usage[] =
    "Usage: stigmer executions COMMAND [ARGS]\n"
    "\n"
    "  list [--state STATE] [--limit N] [--json]\n"
    "                        the latest executions, newest first (default 20)\n"
    "  show ID [--json]      an execution: its state, inputs and steps\n"
    "  cancel ID             cancel a pending or running execution\n"
    "  logs ID [-f]          its events as text; -f follows until it finishes\n"
    "\n"
    "STATE is pending, running, succeeded, failed or cancelled.\n"
    "Exit status: 0 success, 1 failure (the server could not be reached, no\n"
    "such execution, already finished), 2 usage error.\n";

enum {
  REQUEST_TIMEOUT_MS = 15000,
  EVENTS_WAIT_MS = 30000,
  RETRY_FOR_MS = 60000,   /* the server unreachable this long: give up */
  MAX_REPLY = 16u << 20,
  MAX_FILE = STG_WORKFLOW_MAX_TEXT
};

/* --- a blocking client ------------------------------------------------------------------ */

typedef struct {
  uv_loop_t loop;
  uv_signal_t sigint;
  bool sigint_on;
  bool interrupted;        /* Ctrl-C seen */
  const char *addr;
  stg_http_request_t req;
  bool in_flight;
  bool done;
  int err;
  int status;
  json_t *body;
} client_t;

static void on_reply(stg_http_request_t *h, int err, int status, const char *body, size_t len) {
  client_t *c = h->data;
  c->in_flight = false;
  c->done = true;
  c->err = err;
  c->status = status;
  c->body = err == 0 && len > 0 ? json_loadb(body, len, 0, NULL) : NULL;
}

static void on_sigint(uv_signal_t *s, int signum) {
  client_t *c = s->data;
  if (c->interrupted) {
    /* A second Ctrl-C: leave now. */
    fprintf(stderr, "stigmer: interrupted\n");
    _exit(130);
  }
  c->interrupted = true;
  if (c->in_flight)
    stg_http_request_cancel(&c->req);
}

static int client_init(client_t *c, const char *addr) {
  memset(c, 0, sizeof c[0]);
  c->addr = addr;
  int rc = uv_loop_init(&c->loop);
  if (rc != 0)
    return rc;
  uv_signal_init(&c->loop, &c->sigint);
  c->sigint.data = c;
  return 0;
}

/* Ctrl-C ends the request in flight (UV_ECANCELED) instead of the process. */
static void client_catch_sigint(client_t *c) {
  if (!c->sigint_on)
    uv_signal_start(&c->sigint, on_sigint, SIGINT);
  c->sigint_on = true;
}

static void client_close(client_t *c) {
  uv_close((uv_handle_t *)&c->sigint, NULL);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  uv_loop_close(&c->loop);
}

/* One request. Returns 0 with *status and *reply (caller decrefs; NULL when
 * the body is not JSON), UV_ECANCELED after Ctrl-C, or the transport
 * error. */
static int client_call(client_t *c, const char *method, const char *path, json_t *body,
                       uint64_t timeout_ms, int *status, json_t **reply) {
  *status = 0;
  *reply = NULL;
  if (c->interrupted)
    return UV_ECANCELED;
  char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
  if (body && text == NULL)
    return UV_ENOMEM;
  stg_http_request_options_t o = {
      .addr = c->addr,
      .path = path,
      .timeout_ms = timeout_ms,
      .cb = on_reply,
      .method = method,
      .body = text,
      .body_len = text ? strlen(text) : 0,
      .max_body = MAX_REPLY,
  };
  c->done = false;
  c->req.data = c;
  int rc = stg_http_request(&c->loop, &c->req, &o);
  free(text);
  if (rc != 0)
    return rc;
  c->in_flight = true;
  while (!c->done)
    uv_run(&c->loop, UV_RUN_ONCE);
  if (c->err == UV_ECANCELED || (c->interrupted && c->err != 0))
    return UV_ECANCELED;
  if (c->err != 0)
    return c->err;
  *status = c->status;
  *reply = c->body;
  c->body = NULL;
  return 0;
}

static void on_sleep(uv_timer_t *t) { (void)t; }

static void sleep_ms(client_t *c, uint64_t ms) {
  uv_timer_t t;
  uv_timer_init(&c->loop, &t);
  uv_timer_start(&t, on_sleep, ms, 0);
  while (uv_is_active((uv_handle_t *)&t) && !c->interrupted)
    uv_run(&c->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&c->loop, UV_RUN_NOWAIT);
}

/* The same, retried while the server cannot be reached or is not ready
 * (503), for up to RETRY_FOR_MS. */
static int client_call_retry(client_t *c, const char *method, const char *path, json_t *body,
                             uint64_t timeout_ms, int *status, json_t **reply) {
  uint64_t start = uv_hrtime() / 1000000u, delay = 100;
  bool said = false;
  for (;;) {
    int rc = client_call(c, method, path, body, timeout_ms, status, reply);
    bool again = (rc != 0 && rc != UV_ECANCELED && rc != UV_ENOMEM && rc != UV_EINVAL) ||
                 (rc == 0 && *status == 503);
    if (!again || uv_hrtime() / 1000000u - start > RETRY_FOR_MS)
      return rc;
    if (!said)
      fprintf(stderr, "stigmer: the server at %s: %s; retrying\n", c->addr,
              rc ? uv_strerror(rc) : "not ready (503)");
    said = true;
    json_decref(*reply);
    *reply = NULL;
    sleep_ms(c, delay);
    delay = delay * 2 > 2000 ? 2000 : delay * 2;
  }
}

static const char *err_message(json_t *reply) {
  const char *m = json_string_value(json_object_get(json_object_get(reply, "error"), "message"));
  return m ? m : "no message";
}

static void say_unreachable(client_t *c, int rc) {
  fprintf(stderr, "stigmer: cannot reach the server at %s: %s (is the daemon running? "
          "`stigmer daemon start`)\n", c->addr, uv_strerror(rc));
}

static const char *jstr(json_t *o, const char *key, const char *dflt) {
  const char *s = json_string_value(json_object_get(o, key));
  return s ? s : dflt;
}

/* --- events as text -------------------------------------------------------------------- */

typedef struct {
  char state[32];        /* the execution's final state, once finished */
  char error[1024];
  bool finished;
} outcome_t;

static void print_event(json_t *e, outcome_t *oc) {
  const char *type = jstr(e, "type", "");
  const char *step = jstr(e, "step", "?");
  if (strcmp(type, "execution_started") == 0) {
    printf("execution started\n");
  } else if (strcmp(type, "step_started") == 0) {
    printf("step %s: started\n", step);
  } else if (strcmp(type, "output") == 0) {
    FILE *f = strcmp(jstr(e, "stream", "out"), "err") == 0 ? stderr : stdout;
    fprintf(f, "%s | %s\n", step, jstr(e, "line", ""));
  } else if (strcmp(type, "step_finished") == 0) {
    json_t *code = json_object_get(e, "exit_code");
    const char *st = jstr(e, "state", "?");
    if (json_is_integer(code) && strcmp(st, "succeeded") != 0)
      printf("step %s: %s (exit code %lld)\n", step, st, (long long)json_integer_value(code));
    else
      printf("step %s: %s\n", step, st);
  } else if (strcmp(type, "execution_finished") == 0) {
    const char *st = jstr(e, "state", "?");
    const char *err = json_string_value(json_object_get(e, "error"));
    if (oc) {
      snprintf(oc->state, sizeof oc->state, "%s", st);
      snprintf(oc->error, sizeof oc->error, "%s", err ? err : "");
      oc->finished = true;
    }
    if (err && strcmp(err, st) != 0)
      printf("execution %s: %s\n", st, err);
    else
      printf("execution %s\n", st);
  }
  fflush(stdout);
  fflush(stderr);
}

/* Prints the events of execution id after *after. follow: until it
 * finishes; else until none are left. Returns 0, 1 (reported), or
 * UV_ECANCELED after Ctrl-C. */
static int stream_events(client_t *c, const char *id, bool follow, outcome_t *oc) {
  uint64_t after = 0;
  for (;;) {
    char path[256];
    snprintf(path, sizeof path, "/v1/executions/%s/events?after=%llu&wait=%s", id,
             (unsigned long long)after, follow ? "30s" : "0");
    int status;
    json_t *reply;
    int rc = client_call_retry(c, "GET", path, NULL, EVENTS_WAIT_MS + REQUEST_TIMEOUT_MS,
                               &status, &reply);
    if (rc == UV_ECANCELED)
      return rc;
    if (rc != 0) {
      say_unreachable(c, rc);
      return 1;
    }
    if (status != 200) {
      fprintf(stderr, "stigmer: events of %s: the server answered %d: %s\n", id, status,
              err_message(reply));
      json_decref(reply);
      return 1;
    }
    size_t i;
    json_t *e;
    json_t *events = json_object_get(reply, "events");
    json_array_foreach(events, i, e) print_event(e, oc);
    json_int_t next = json_integer_value(json_object_get(reply, "next"));
    if (next > 0)
      after = (uint64_t)next;
    bool finished = json_is_true(json_object_get(reply, "finished"));
    bool empty = json_array_size(events) == 0;
    json_decref(reply);
    if (finished || (!follow && empty))
      return 0;
  }
}

/* --- stigmer run -------------------------------------------------------------------------- */

static int read_file(const char *path, char **out, size_t *len) {
  FILE *f = fopen(path, "re");
  if (f == NULL)
    return -errno;
  char *buf = malloc(MAX_FILE + 1);
  if (buf == NULL) {
    fclose(f);
    return UV_ENOMEM;
  }
  size_t n = fread(buf, 1, MAX_FILE + 1, f);
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return UV_EIO;
  }
  if (n > MAX_FILE) {
    free(buf);
    return UV_E2BIG;
  }
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return 0;
}

static int cancel_execution(client_t *c, const char *id, bool quiet);

int stg_cli_run(stg_cli_t *cli, int argc, char **argv) {
  const char *file = NULL;
  bool detach = false;
  json_t *inputs = json_object();
  char *text = NULL;
  stg_workflow_t *wf = NULL;
  int code = 2;
  client_t c;
  bool have_client = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *val = NULL;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(run_usage, stdout);
      code = 0;
      goto out;
    } else if (strcmp(a, "-d") == 0 || strcmp(a, "--detach") == 0) {
      detach = true;
    } else if (strcmp(a, "-i") == 0 || strcmp(a, "--input") == 0) {
      if (i + 1 >= argc) {
        code = stg_cli_usage_error("run: %s needs NAME=VALUE", a);
        goto out;
      }
      val = argv[++i];
    } else if (strncmp(a, "--input=", 8) == 0) {
      val = a + 8;
    } else if (a[0] == '-' && a[1] != '\0') {
      code = stg_cli_usage_error("run: unknown option '%s'", a);
      goto out;
    } else if (file == NULL) {
      file = a;
    } else {
      code = stg_cli_usage_error("run: unexpected argument '%s'", a);
      goto out;
    }
    if (val) {
      const char *eq = strchr(val, '=');
      char name[STG_WORKFLOW_MAX_NAME + 1];
      if (eq == NULL || eq == val || (size_t)(eq - val) > STG_WORKFLOW_MAX_NAME) {
        code = stg_cli_usage_error("run: --input: expected NAME=VALUE, got '%s'", val);
        goto out;
      }
      snprintf(name, sizeof name, "%.*s", (int)(eq - val), val);
      json_t *v = json_string(eq + 1);
      if (v == NULL) {
        code = stg_cli_usage_error("run: --input %s: the value is not valid UTF-8", name);
        goto out;
      }
      json_object_set_new(inputs, name, v);
    }
  }
  if (file == NULL) {
    code = stg_cli_usage_error("run: missing the workflow file (stigmer run FILE.ini)");
    goto out;
  }
  size_t len = 0;
  int rc = read_file(file, &text, &len);
  if (rc != 0) {
    fprintf(stderr, "stigmer: read %s: %s\n", file,
            rc == UV_E2BIG ? "larger than 1MiB" : uv_strerror(rc));
    goto out;
  }
  char err[2048];
  rc = stg_workflow_parse(text, len, file, &wf, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "stigmer: %s\n", rc == UV_ENOMEM ? "out of memory" : err);
    goto out;
  }
  const char *key;
  json_t *v;
  json_object_foreach(inputs, key, v) {
    if (stg_workflow_input(wf, key) == NULL) {
      fprintf(stderr, "stigmer: --input %s: %s has no input of that name\n", key, file);
      goto out;
    }
  }
  for (unsigned i = 0; i < wf->n_inputs; i++) {
    if (wf->inputs[i].default_value == NULL && json_object_get(inputs, wf->inputs[i].name) == NULL) {
      fprintf(stderr, "stigmer: %s:%d: input %s has no default: give it with --input %s=VALUE\n",
              file, wf->inputs[i].line, wf->inputs[i].name, wf->inputs[i].name);
      goto out;
    }
  }
  code = 1;
  stg_config_t *cfg = stg_cli_config(cli);
  if (stg_cli_ensure_daemon(cli) != 0)
    goto out;
  if (client_init(&c, cfg->server.listen) != 0) {
    fprintf(stderr, "stigmer: cannot start an event loop\n");
    goto out;
  }
  have_client = true;
  json_t *req = json_pack("{s:s, s:O}", "workflow", text, "inputs", inputs);
  int status;
  json_t *reply;
  rc = req ? client_call_retry(&c, "POST", "/v1/executions", req, REQUEST_TIMEOUT_MS, &status,
                               &reply)
           : UV_ENOMEM;
  json_decref(req);
  if (rc != 0) {
    say_unreachable(&c, rc);
    goto out;
  }
  const char *id = jstr(reply, "id", NULL);
  if (status != 201 || id == NULL) {
    fprintf(stderr, "stigmer: submit %s: the server answered %d: %s\n", file, status,
            err_message(reply));
    code = status == 400 ? 2 : 1;
    json_decref(reply);
    goto out;
  }
  char exid[64];
  snprintf(exid, sizeof exid, "%s", id);
  json_decref(reply);
  printf("%s\n", exid);
  fflush(stdout);
  if (detach) {
    code = 0;
    goto out;
  }
  client_catch_sigint(&c);
  outcome_t oc;
  memset(&oc, 0, sizeof oc);
  rc = stream_events(&c, exid, true, &oc);
  if (rc == UV_ECANCELED) {
    fprintf(stderr, "stigmer: interrupted; cancelling %s\n", exid);
    c.interrupted = false; /* let the cancel through; a second Ctrl-C exits */
    cancel_execution(&c, exid, true);
    code = 130;
    goto out;
  }
  if (rc != 0)
    goto out;
  code = strcmp(oc.state, "succeeded") == 0 ? 0 : 1;
out:
  if (have_client)
    client_close(&c);
  if (wf)
    stg_workflow_free(wf);
  free(text);
  json_decref(inputs);
  return code;
}

/* --- stigmer executions ----------------------------------------------------------------- */

static bool is_help(const char *a) { return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0; }

static void print_json(json_t *j) {
  char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  printf("%s\n", s ? s : "null");
  free(s);
}

/* "2026-11-21T05:39:11.082Z" as "2026-11-21 05:39:11", or "-". */
static const char *when(json_t *v, char *buf, size_t len) {
  const char *s = json_string_value(v);
  if (s == NULL || strlen(s) < 19)
    return "-";
  snprintf(buf, len, "%.10s %.8s", s, s + 11);
  return buf;
}

/* The path component id, refused when it could change the request. */
static bool id_ok(const char *id) {
  if (*id == '\0' || strlen(id) > 64)
    return false;
  for (const char *p = id; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '_' || *p == '-'))
      return false;
  return true;
}

static int open_client(stg_cli_t *cli, client_t *c) {
  stg_config_t *cfg = stg_cli_config(cli);
  if (client_init(c, cfg->server.listen) != 0) {
    fprintf(stderr, "stigmer: cannot start an event loop\n");
    return 1;
  }
  return 0;
}

/* GET path; 0 with *reply on 200, else reports and returns 1. */
static int get_json(client_t *c, const char *path, const char *what, json_t **reply) {
  int status;
  int rc = client_call(c, "GET", path, NULL, REQUEST_TIMEOUT_MS, &status, reply);
  if (rc != 0) {
    say_unreachable(c, rc);
    return 1;
  }
  if (status != 200) {
    fprintf(stderr, "stigmer: %s: %s\n", what,
            status == 404 ? "no such execution" : err_message(*reply));
    json_decref(*reply);
    *reply = NULL;
    return 1;
  }
  return 0;
}

static int cmd_list(stg_cli_t *cli, int argc, char **argv) {
  const char *state = NULL;
  int64_t limit = 20;
  bool json = false;
  for (int i = 1; i < argc; i++) {
    if (is_help(argv[i])) {
      fputs(exec_usage, stdout);
      return 0;
    } else if (strcmp(argv[i], "--json") == 0) {
      json = true;
    } else if (strcmp(argv[i], "--state") == 0 && i + 1 < argc) {
      state = argv[++i];
      static const char *const ok[] = {"pending", "running", "succeeded", "failed",
                                       "cancelled"};
      bool known = false;
      for (size_t k = 0; k < 5; k++)
        known = known || strcmp(state, ok[k]) == 0;
      if (!known)
        return stg_cli_usage_error("executions list: --state: expected pending, running, "
                                   "succeeded, failed or cancelled, got '%s'", state);
    } else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
      if (stg_parse_int(argv[++i], 1, 1000, &limit) != 0)
        return stg_cli_usage_error("executions list: --limit: expected 1..1000, got '%s'",
                                   argv[i]);
    } else {
      return stg_cli_usage_error("executions list: unexpected argument '%s'", argv[i]);
    }
  }
  client_t c;
  if (open_client(cli, &c) != 0)
    return 1;
  char path[128];
  snprintf(path, sizeof path, "/v1/executions?limit=%lld%s%s", (long long)limit,
           state ? "&state=" : "", state ? state : "");
  json_t *reply = NULL;
  int code = get_json(&c, path, "list executions", &reply);
  if (code == 0) {
    json_t *list = json_object_get(reply, "executions");
    if (json) {
      print_json(list ? list : json_array());
    } else {
      printf("%-20s %-24s %-10s %-19s  %s\n", "ID", "NAME", "STATE", "CREATED", "FINISHED");
      size_t i;
      json_t *e;
      json_array_foreach(list, i, e) {
        char b1[32], b2[32];
        printf("%-20s %-24s %-10s %-19s  %s\n", jstr(e, "id", "?"), jstr(e, "name", "?"),
               jstr(e, "state", "?"), when(json_object_get(e, "created_at"), b1, sizeof b1),
               when(json_object_get(e, "finished_at"), b2, sizeof b2));
      }
    }
  }
  json_decref(reply);
  client_close(&c);
  return code;
}

/* The arguments of `executions show|cancel|logs`: ID and at most one
 * boolean flag (long, short; either may be NULL). Returns -1 to go on with
 * *id set, or the exit code (help, usage error, malformed id). */
static int id_args(int argc, char **argv, const char *flag, const char *short_flag,
                   bool *flag_set, const char **id) {
  for (int i = 1; i < argc; i++) {
    if (is_help(argv[i])) {
      fputs(exec_usage, stdout);
      return 0;
    } else if ((flag && strcmp(argv[i], flag) == 0) ||
               (short_flag && strcmp(argv[i], short_flag) == 0)) {
      *flag_set = true;
    } else if (argv[i][0] != '-' && *id == NULL) {
      *id = argv[i];
    } else {
      return stg_cli_usage_error("executions %s: unexpected argument '%s'", argv[0],
                                 argv[i]);
    }
  }
  if (*id == NULL)
    return stg_cli_usage_error("executions %s: missing the execution's ID", argv[0]);
  if (!id_ok(*id)) {
    fprintf(stderr, "stigmer: %s: no such execution\n", *id);
    return 1;
  }
  return -1;
}

static int cmd_show(stg_cli_t *cli, int argc, char **argv) {
  const char *id = NULL;
  bool json = false;
  int rc = id_args(argc, argv, "--json", NULL, &json, &id);
  if (rc >= 0)
    return rc;
  client_t c;
  if (open_client(cli, &c) != 0)
    return 1;
  char path[128], what[128];
  snprintf(path, sizeof path, "/v1/executions/%s", id);
  snprintf(what, sizeof what, "show %s", id);
  json_t *x = NULL;
  int code = get_json(&c, path, what, &x);
  if (code == 0 && json) {
    print_json(x);
  } else if (code == 0) {
    char b[32];
    printf("id:        %s\n", jstr(x, "id", "?"));
    printf("name:      %s\n", jstr(x, "name", "?"));
    printf("state:     %s\n", jstr(x, "state", "?"));
    printf("created:   %s\n", when(json_object_get(x, "created_at"), b, sizeof b));
    printf("started:   %s\n", when(json_object_get(x, "started_at"), b, sizeof b));
    printf("finished:  %s\n", when(json_object_get(x, "finished_at"), b, sizeof b));
    const char *err = json_string_value(json_object_get(x, "error"));
    if (err)
      printf("error:     %s\n", err);
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(x, "inputs"), k, v)
        printf("input:     %s = %s\n", k, json_string_value(v) ? json_string_value(v) : "");
    printf("\n%-24s %-6s %-10s %-5s %-19s  %s\n", "STEP", "KIND", "STATE", "EXIT", "STARTED",
           "FINISHED");
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(x, "steps"), i, s) {
      char code_s[16] = "-", b1[32], b2[32];
      json_t *ec = json_object_get(s, "exit_code");
      if (json_is_integer(ec))
        snprintf(code_s, sizeof code_s, "%lld", (long long)json_integer_value(ec));
      printf("%-24s %-6s %-10s %-5s %-19s  %s\n", jstr(s, "name", "?"), jstr(s, "kind", "?"),
             jstr(s, "state", "?"), code_s, when(json_object_get(s, "started_at"), b1, sizeof b1),
             when(json_object_get(s, "finished_at"), b2, sizeof b2));
    }
  }
  json_decref(x);
  client_close(&c);
  return code;
}

/* POST /v1/executions/{id}/cancel. Returns 0 or 1 (reported). */
static int cancel_execution(client_t *c, const char *id, bool quiet) {
  char path[128];
  snprintf(path, sizeof path, "/v1/executions/%s/cancel", id);
  int status;
  json_t *reply;
  json_t *body = json_object();
  int rc = client_call(c, "POST", path, body, REQUEST_TIMEOUT_MS, &status, &reply);
  json_decref(body);
  if (rc != 0) {
    say_unreachable(c, rc);
    return 1;
  }
  int code = 0;
  if (status == 200) {
    printf("%s: cancelled\n", id);
  } else if (status == 409) {
    if (!quiet)
      fprintf(stderr, "stigmer: %s has already finished: %s\n", id, err_message(reply));
    code = 1;
  } else if (status == 404) {
    fprintf(stderr, "stigmer: %s: no such execution\n", id);
    code = 1;
  } else {
    fprintf(stderr, "stigmer: cancel %s: the server answered %d: %s\n", id, status,
            err_message(reply));
    code = 1;
  }
  json_decref(reply);
  return code;
}

static int cmd_cancel(stg_cli_t *cli, int argc, char **argv) {
  const char *id = NULL;
  int rc = id_args(argc, argv, NULL, NULL, NULL, &id);
  if (rc >= 0)
    return rc;
  client_t c;
  if (open_client(cli, &c) != 0)
    return 1;
  int code = cancel_execution(&c, id, false);
  client_close(&c);
  return code;
}

static int cmd_logs(stg_cli_t *cli, int argc, char **argv) {
  const char *id = NULL;
  bool follow = false;
  int rc = id_args(argc, argv, "--follow", "-f", &follow, &id);
  if (rc >= 0)
    return rc;
  client_t c;
  if (open_client(cli, &c) != 0)
    return 1;
  rc = stream_events(&c, id, follow, NULL);
  client_close(&c);
  return rc == 0 ? 0 : 1;
}

typedef struct {
  const char *name;
  int (*fn)(stg_cli_t *, int, char **);
} sub_t;

static const sub_t subs[] = {
    {"cancel", cmd_cancel}, {"list", cmd_list}, {"logs", cmd_logs}, {"show", cmd_show},
};

int stg_cli_executions(stg_cli_t *cli, int argc, char **argv) {
  if (argc < 2)
    return stg_cli_usage_error("executions: missing command (list, show, cancel, logs)");
  if (is_help(argv[1])) {
    fputs(exec_usage, stdout);
    return 0;
  }
  for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
    if (strcmp(subs[i].name, argv[1]) == 0)
      return subs[i].fn(cli, argc - 1, argv + 1);
  return stg_cli_usage_error("executions: unknown command '%s'", argv[1]);
}
