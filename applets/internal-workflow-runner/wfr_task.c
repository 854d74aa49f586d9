/* One claimed workflow task: runs the execution's steps that are not
 * finished yet, in order, and reports to the server (docs/api.md, Tasks).
 *
 * A task moves between steps in advance(): events are sent in batches, one
 * request in flight at a time; a step starts only once the server has
 * accepted its step_started (it refuses one for a step already succeeded,
 * so a finished step never runs twice); the task completes (or is
 * released) only once every event was accepted. Heartbeats run beside it
 * every lease/3; they learn of a cancel or a lost lease.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "parse.h"
#include "wfr.h"

extern char **environ;

enum {
  LINE_MAX_BYTES = 8192,                /* a longer line is split */
  QUEUE_PAUSE = 2000,                   /* events buffered: stop reading the step */
  QUEUE_RESUME = 500,                   /* ... and read again below this */
  BATCH_MAX_EVENTS = 500,               /* per POST /events */
  BATCH_MAX_BYTES = 256 * 1024,         /* estimated JSON size of one batch */
  STEP_MAX_EVENT_BYTES = 16 * 1024 * 1024, /* output lines recorded per step */
  LINGER_MS = 500,                      /* shell exited, pipes open: then TERM */
  FORCE_CLOSE_MS = 1000,                /* after SIGKILL: close the pipes anyway */
  AGENT_WAIT_MS = 30000,                /* GET /v1/tasks/{id}?wait= */
  AGENT_DEFAULT_TIMEOUT_MS = 10 * 60 * 1000,
  AGENT_SLACK_MS = 10000,               /* our own limit beyond the agent's */
  REQUEST_TIMEOUT_MS = 10000,
  MIN_HEARTBEAT_MS = 100
};

typedef enum { ST_PENDING, ST_RUNNING, ST_SUCCEEDED, ST_FAILED, ST_CANCELLED, ST_SKIPPED } step_state_t;
static const char *const state_names[] = {"pending", "running", "succeeded",
                                          "failed", "cancelled", "skipped"};

typedef enum { PHASE_IDLE, PHASE_STARTING, PHASE_RUNNING } phase_t;
/* Why we ended a step ourselves. */
typedef enum { END_NONE, END_TIMEOUT, END_CANCEL, END_STOP, END_LOST } end_t;
/* Signals sent to a run step's process group. */
typedef enum { KILL_NONE, KILL_LINGER, KILL_TERM, KILL_KILL } kill_phase_t;

typedef struct {
  uv_pipe_t pipe;
  stg__wfr_task_t *t;
  const char *stream;        /* "out" or "err" */
  bool open;
  bool reading;
  size_t len;                /* bytes in line */
  char line[LINE_MAX_BYTES];
} out_pipe_t;

struct stg__wfr_task_s {
  stg__wfr_t *r;
  stg__wfr_task_t *prev, *next;
  char id[64];
  char execution_id[64];
  uint64_t lease_ms;
  stg_workflow_t *wf;        /* NULL when the definition did not parse */
  unsigned n_steps;
  json_t *inputs;            /* the payload's inputs (object) */
  step_state_t *state;       /* per step */
  char **output;             /* per step: its output (UTF-8, capped), or NULL */
  char *error;               /* why the execution failed */
  bool failed;               /* complete as failed */
  bool cancel_req;           /* a heartbeat said the execution is cancelled */
  bool lost;                 /* the lease is lost: abandon, never complete */
  bool aborting;             /* out of time while stopping */
  bool done;                 /* completed or released */
  bool closing;
  bool handles_closing;
  bool after_old;            /* an abandoned run of the same task is still ending */
  unsigned handles;          /* timers and calls still open */

  /* the current step */
  int cur;
  phase_t phase;
  end_t end;
  uv_timer_t step_timer;     /* the step's timeout */
  uv_timer_t kill_timer;     /* the next signal to the process group */
  kill_phase_t kill_phase;
  uv_process_t proc;
  int pid;                   /* the step's process (group) */
  bool proc_open;
  bool exited;
  bool exited_after_term;    /* it ended after our SIGTERM: not a success */
  int spawn_err;
  int64_t exit_status;
  int term_signal;
  out_pipe_t out, err;
  unsigned step_handles;     /* process and pipes still open */
  char *stdout_buf;          /* the step's output, capped */
  size_t stdout_len;
  uint64_t event_bytes;      /* output lines recorded for this step */
  bool event_trunc;
  stg__wfr_call_t agent;     /* create, then poll, the agent task */
  char agent_task[64];
  bool agent_ok;
  char *agent_output;
  char *agent_error;

  /* events */
  stg__wfr_call_t ev;
  json_t *queue;             /* not yet sent */

  /* heartbeats */
  uv_timer_t hb_timer;
  stg__wfr_call_t hb;
  uint64_t hb_every_ms;

  /* complete or release */
  stg__wfr_call_t fin;
};

static void advance(stg__wfr_task_t *t);
static void try_close(stg__wfr_task_t *t);

static const stg_workflow_step_t *cur_step(stg__wfr_task_t *t) {
  return &t->wf->steps[t->cur];
}

static void set_error(stg__wfr_task_t *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_error(stg__wfr_task_t *t, const char *fmt, ...) {
  if (t->error)
    return; /* the first error explains it */
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  t->error = strdup(buf);
}

/* --- events -------------------------------------------------------------------------- */

static json_t *jstrn(const char *s, size_t len) {
  size_t n;
  char *u = stg__wfr_utf8(s, len, &n);
  if (u == NULL)
    return json_string("");
  json_t *j = json_stringn_nocheck(u, n);
  free(u);
  return j;
}

static void queue_event(stg__wfr_task_t *t, json_t *ev) {
  if (ev == NULL) {
    stg_error("task %s: out of memory for an event", t->id);
    return;
  }
  json_array_append_new(t->queue, ev);
}

static void ev_step_started(stg__wfr_task_t *t) {
  queue_event(t, json_pack("{s:s, s:s}", "type", "step_started", "step", cur_step(t)->name));
}

static void ev_step_finished(stg__wfr_task_t *t, int i, step_state_t st, bool have_code,
                             int64_t code, const char *output) {
  json_t *e = json_pack("{s:s, s:s, s:s}", "type", "step_finished", "step",
                        t->wf->steps[i].name, "state", state_names[st]);
  if (e == NULL) {
    queue_event(t, NULL);
    return;
  }
  json_object_set_new(e, "exit_code", have_code ? json_integer(code) : json_null());
  json_object_set_new(e, "output", output ? json_string(output) : json_null());
  queue_event(t, e);
}

static void pipes_read(stg__wfr_task_t *t, bool on);

static void ev_output(stg__wfr_task_t *t, const char *stream, const char *line, size_t len) {
  if (t->event_trunc)
    return;
  if (t->event_bytes + len > STEP_MAX_EVENT_BYTES) {
    t->event_trunc = true;
    static const char note[] = "[stigmer: more than 16MiB of output; the rest is not recorded]";
    line = note;
    len = sizeof note - 1;
  }
  t->event_bytes += len;
  json_t *e = json_pack("{s:s, s:s, s:s}", "type", "output", "step", cur_step(t)->name,
                        "stream", stream);
  if (e)
    json_object_set_new(e, "line", jstrn(line, len));
  queue_event(t, e);
  if (json_array_size(t->queue) >= QUEUE_PAUSE)
    pipes_read(t, false);
}

/* Each line of text as an output event. */
static void ev_output_text(stg__wfr_task_t *t, const char *text) {
  const char *p = text;
  while (*p) {
    const char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    ev_output(t, "out", p, n);
    p += n + (nl ? 1 : 0);
  }
}

static size_t ev_size(json_t *e) {
  size_t n = 160;
  json_t *v = json_object_get(e, "line");
  if (v)
    n += 6 * json_string_length(v);
  v = json_object_get(e, "output");
  if (json_is_string(v))
    n += 6 * json_string_length(v);
  return n;
}

static void on_events(stg__wfr_call_t *c, int err, int status, json_t *body);

/* Sends what is queued, unless a batch is in flight. */
static void flush(stg__wfr_task_t *t) {
  if (t->ev.busy || t->closing || t->lost || json_array_size(t->queue) == 0)
    return;
  json_t *batch = json_array(), *rest = json_array();
  size_t bytes = 0, i;
  json_t *e;
  json_array_foreach(t->queue, i, e) {
    size_t sz = ev_size(e);
    if (json_array_size(rest) > 0 ||
        (json_array_size(batch) > 0 &&
         (json_array_size(batch) >= BATCH_MAX_EVENTS || bytes + sz > BATCH_MAX_BYTES)))
      json_array_append(rest, e);
    else {
      json_array_append(batch, e);
      bytes += sz;
    }
  }
  json_decref(t->queue);
  t->queue = rest;
  json_t *req = json_pack("{s:s, s:o}", "worker", t->r->worker, "events", batch);
  char path[128], what[160];
  snprintf(path, sizeof path, "/v1/tasks/%s/events", t->id);
  snprintf(what, sizeof what, "send the events of task %s", t->id);
  stg__wfr_call_options_t o = {
      .method = "POST", .path = path, .body = req, .timeout_ms = REQUEST_TIMEOUT_MS,
      .max_attempts = 0, .retry_5xx = true, .what = what};
  int rc = stg__wfr_call_start(&t->ev, &o, on_events);
  json_decref(req);
  if (rc != 0)
    stg_error("%s: %s; dropping %zu events", what, uv_strerror(rc), i);
}

static const char *error_message(json_t *body) {
  const char *m = json_string_value(json_object_get(json_object_get(body, "error"), "message"));
  return m ? m : "no message";
}

static void on_events(stg__wfr_call_t *c, int err, int status, json_t *body) {
  stg__wfr_task_t *t = c->data;
  if (err == 0 && status == 200) {
    /* accepted */
  } else if (err == UV_ECANCELED) {
    /* closing */
  } else if (err != 0) {
    stg_warn("send the events of task %s: %s", t->id, uv_strerror(err));
  } else if (status == 409 || status == 404) {
    if (!t->lost)
      stg_warn("task %s: the server refused our events (%d: %s); the task is not ours any "
               "more, abandoning it", t->id, status, error_message(body));
    t->lost = true;
  } else {
    stg_error("task %s: the server refused a batch of events (%d: %s); dropping it", t->id,
              status, error_message(body));
  }
  if (json_array_size(t->queue) < QUEUE_RESUME)
    pipes_read(t, true);
  advance(t);
}

/* --- heartbeats ------------------------------------------------------------------- */

static void end_step(stg__wfr_task_t *t, end_t why);

static void on_heartbeat(stg__wfr_call_t *c, int err, int status, json_t *body) {
  stg__wfr_task_t *t = c->data;
  if (t->closing) {
    try_close(t);
    return;
  }
  if (err != 0) {
    stg_debug("heartbeat of task %s: %s", t->id, uv_strerror(err));
    return; /* the next tick tries again */
  }
  if (status == 409 || status == 404) {
    if (!t->lost)
      stg_warn("task %s: its lease is lost (%d: %s); abandoning it", t->id, status,
               error_message(body));
    t->lost = true;
    end_step(t, END_LOST);
    advance(t);
    return;
  }
  if (status != 200) {
    stg_warn("heartbeat of task %s: the server answered %d: %s", t->id, status,
             error_message(body));
    return;
  }
  json_int_t lease = json_integer_value(json_object_get(body, "lease_ms"));
  if (lease > 0 && (uint64_t)lease != t->lease_ms) {
    t->lease_ms = (uint64_t)lease;
    t->hb_every_ms = t->lease_ms / 3 > MIN_HEARTBEAT_MS ? t->lease_ms / 3 : MIN_HEARTBEAT_MS;
    uv_timer_set_repeat(&t->hb_timer, t->hb_every_ms);
  }
  if (json_is_true(json_object_get(body, "cancelled")) && !t->cancel_req) {
    stg_info("execution %s was cancelled; stopping task %s", t->execution_id, t->id);
    t->cancel_req = true;
    end_step(t, END_CANCEL);
    advance(t);
  }
}

static void on_hb_timer(uv_timer_t *h) {
  stg__wfr_task_t *t = container_of(h, stg__wfr_task_t, hb_timer);
  if (t->hb.busy || t->done || t->closing || t->lost)
    return;
  json_t *req = json_pack("{s:s}", "worker", t->r->worker);
  char path[128], what[160];
  snprintf(path, sizeof path, "/v1/tasks/%s/heartbeat", t->id);
  snprintf(what, sizeof what, "heartbeat of task %s", t->id);
  stg__wfr_call_options_t o = {
      .method = "POST", .path = path, .body = req,
      .timeout_ms = t->hb_every_ms > 2000 ? t->hb_every_ms : 2000,
      .max_attempts = 1, .what = what};
  stg__wfr_call_start(&t->hb, &o, on_heartbeat);
  json_decref(req);
}

/* --- run steps: the process group -------------------------------------------------- */

static void signal_group(stg__wfr_task_t *t, int sig) {
  if (t->pid <= 0)
    return;
  if (kill(-t->pid, sig) != 0 && errno != ESRCH)
    stg_warn("signal %d to the process group %d of step %s: %s", sig, t->pid,
             cur_step(t)->name, strerror(errno));
}

static void close_pipe(out_pipe_t *p);

/* Reading stopped for a backlog of events: the pipes may hold unread
 * output, so no judgement about them yet. */
static bool pipes_paused(stg__wfr_task_t *t) {
  return (t->out.open && !t->out.reading) || (t->err.open && !t->err.reading);
}

static bool group_alive(stg__wfr_task_t *t) {
  return t->pid > 0 && (kill(-t->pid, 0) == 0 || errno != ESRCH);
}

static void on_kill_timer(uv_timer_t *h) {
  stg__wfr_task_t *t = container_of(h, stg__wfr_task_t, kill_timer);
  switch (t->kill_phase) {
  case KILL_LINGER: /* the shell is gone, its output is not closed yet */
    if (pipes_paused(t)) {
      uv_timer_start(&t->kill_timer, on_kill_timer, LINGER_MS, 0);
      break;
    }
    if (!group_alive(t)) {
      /* Only a process outside the group can hold the pipes now. */
      t->kill_phase = KILL_KILL;
      uv_timer_start(&t->kill_timer, on_kill_timer, FORCE_CLOSE_MS, 0);
      break;
    }
    /* fall through */
  case KILL_NONE:
    signal_group(t, SIGTERM);
    t->kill_phase = KILL_TERM;
    uv_timer_start(&t->kill_timer, on_kill_timer, t->r->kill_grace_ms, 0);
    break;
  case KILL_TERM:
    if (group_alive(t)) {
      stg_info("step %s of %s did not end %llums after SIGTERM; sending SIGKILL",
               cur_step(t)->name, t->execution_id, (unsigned long long)t->r->kill_grace_ms);
      signal_group(t, SIGKILL);
    }
    t->kill_phase = KILL_KILL;
    uv_timer_start(&t->kill_timer, on_kill_timer, FORCE_CLOSE_MS, 0);
    break;
  case KILL_KILL: /* something outside the group holds the pipes */
    if (pipes_paused(t)) {
      uv_timer_start(&t->kill_timer, on_kill_timer, FORCE_CLOSE_MS, 0);
      break;
    }
    close_pipe(&t->out);
    close_pipe(&t->err);
    break;
  }
}

/* SIGTERM to the group now, SIGKILL after the grace. */
static void term_group(stg__wfr_task_t *t) {
  if (t->kill_phase >= KILL_TERM)
    return;
  t->kill_phase = KILL_NONE;
  uv_timer_stop(&t->kill_timer);
  on_kill_timer(&t->kill_timer);
}

static void on_agent(stg__wfr_call_t *c, int err, int status, json_t *body);

/* Ends the running step for a reason of ours. */
static void end_step(stg__wfr_task_t *t, end_t why) {
  if (t->phase != PHASE_RUNNING)
    return;
  if (t->end == END_NONE || why == END_LOST)
    t->end = why;
  if (t->wf->steps[t->cur].kind == STG_WORKFLOW_AGENT)
    stg__wfr_call_cancel(&t->agent);
  else if (t->step_handles > 0)
    term_group(t);
}

static void on_step_timeout(uv_timer_t *h) {
  stg__wfr_task_t *t = container_of(h, stg__wfr_task_t, step_timer);
  char d[32];
  stg_format_duration(cur_step(t)->timeout_ms, d, sizeof d);
  stg_info("step %s of %s timed out after %s; stopping it", cur_step(t)->name,
           t->execution_id, d);
  end_step(t, END_TIMEOUT);
}

static void step_finished(stg__wfr_task_t *t);

static void on_step_handle_closed(uv_handle_t *h) {
  stg__wfr_task_t *t = h->data;
  if (--t->step_handles == 0)
    step_finished(t);
}

static void close_pipe(out_pipe_t *p) {
  if (!p->open)
    return;
  p->open = false;
  p->reading = false;
  uv_close((uv_handle_t *)&p->pipe, on_step_handle_closed);
}

static void emit_line(out_pipe_t *p) {
  size_t n = p->len;
  if (n > 0 && p->line[n - 1] == '\r')
    n--;
  ev_output(p->t, p->stream, p->line, n);
  p->len = 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char rbuf[65536]; /* consumed before the next read */
  buf->base = rbuf;
  buf->len = sizeof rbuf;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  out_pipe_t *p = container_of((uv_pipe_t *)s, out_pipe_t, pipe);
  stg__wfr_task_t *t = p->t;
  if (nread < 0) {
    if (p->len > 0)
      emit_line(p);
    close_pipe(p);
    advance(t);
    return;
  }
  const char *d = buf->base;
  size_t n = (size_t)nread;
  if (p == &t->out && t->stdout_len < STG_WORKFLOW_MAX_VALUE) {
    size_t take = STG_WORKFLOW_MAX_VALUE - t->stdout_len;
    if (take > n)
      take = n;
    if (t->stdout_buf == NULL)
      t->stdout_buf = malloc(STG_WORKFLOW_MAX_VALUE);
    if (t->stdout_buf) {
      memcpy(t->stdout_buf + t->stdout_len, d, take);
      t->stdout_len += take;
    }
  }
  while (n > 0) {
    const char *nl = memchr(d, '\n', n);
    size_t chunk = nl ? (size_t)(nl - d) : n;
    size_t room = LINE_MAX_BYTES - p->len;
    if (chunk > room)
      chunk = room;
    memcpy(p->line + p->len, d, chunk);
    p->len += chunk;
    d += chunk;
    n -= chunk;
    if (n > 0 && *d == '\n') {
      emit_line(p);
      d++;
      n--;
    } else if (p->len == LINE_MAX_BYTES) {
      emit_line(p);
    }
  }
  advance(t);
}

static void pipes_read(stg__wfr_task_t *t, bool on) {
  out_pipe_t *ps[2] = {&t->out, &t->err};
  for (int i = 0; i < 2; i++) {
    out_pipe_t *p = ps[i];
    if (!p->open || p->reading == on)
      continue;
    if (on)
      uv_read_start((uv_stream_t *)&p->pipe, on_alloc, on_read);
    else
      uv_read_stop((uv_stream_t *)&p->pipe);
    p->reading = on;
  }
}

static void on_exit_cb(uv_process_t *proc, int64_t status, int sig) {
  stg__wfr_task_t *t = container_of(proc, stg__wfr_task_t, proc);
  t->exited = true;
  t->exited_after_term = t->kill_phase >= KILL_TERM;
  t->exit_status = status;
  t->term_signal = sig;
  t->proc_open = false;
  uv_close((uv_handle_t *)&t->proc, on_step_handle_closed);
  /* Whatever the shell left behind that still holds its output goes
   * next. */
  if ((t->out.open || t->err.open) && t->kill_phase == KILL_NONE) {
    t->kill_phase = KILL_LINGER;
    uv_timer_start(&t->kill_timer, on_kill_timer, LINGER_MS, 0);
  }
}

/* --- run steps: the environment ---------------------------------------------------- */

typedef struct {
  char **v;
  size_t n, cap;
  bool oom;
} envv_t;

static void env_set(envv_t *e, const char *name, const char *value) {
  size_t nl = strlen(name);
  size_t vl = strlen(value);
  if (vl > STG_WORKFLOW_MAX_VALUE)
    vl = STG_WORKFLOW_MAX_VALUE;
  for (size_t i = 0; i < e->n; i++) {
    if (strncmp(e->v[i], name, nl) == 0 && e->v[i][nl] == '=') {
      free(e->v[i]);
      e->v[i] = e->v[--e->n];
      break;
    }
  }
  if (e->n + 2 > e->cap) {
    size_t nc = e->cap ? e->cap * 2 : 64;
    char **nv = realloc(e->v, nc * sizeof *nv);
    if (nv == NULL) {
      e->oom = true;
      return;
    }
    e->v = nv;
    e->cap = nc;
  }
  char *kv = malloc(nl + vl + 2);
  if (kv == NULL) {
    e->oom = true;
    return;
  }
  memcpy(kv, name, nl);
  kv[nl] = '=';
  memcpy(kv + nl + 1, value, vl);
  kv[nl + 1 + vl] = '\0';
  e->v[e->n++] = kv;
  e->v[e->n] = NULL;
}

static void env_free(envv_t *e) {
  for (size_t i = 0; i < e->n; i++)
    free(e->v[i]);
  free(e->v);
}

static const char *input_value(stg__wfr_task_t *t, const char *name) {
  const char *v = json_string_value(json_object_get(t->inputs, name));
  if (v == NULL) {
    const stg_workflow_input_t *in = stg_workflow_input(t->wf, name);
    if (in)
      v = in->default_value;
  }
  return v;
}

/* The runner's environment without what was meant for the runner itself,
 * then env.*, then the execution's id, its inputs and the outputs of the
 * steps before this one. Inputs are never part of the command text. */
static int build_env(stg__wfr_task_t *t, envv_t *e) {
  static const char *const drop[] = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                                     "STIGMER_SUPERVISOR_PID", "LISTEN_FDS", "LISTEN_PID",
                                     "LISTEN_FDNAMES"};
  const stg_workflow_step_t *s = cur_step(t);
  for (char **p = environ; *p; p++) {
    const char *eq = strchr(*p, '=');
    if (eq == NULL)
      continue;
    char name[256];
    size_t nl = (size_t)(eq - *p);
    if (nl >= sizeof name)
      continue;
    memcpy(name, *p, nl);
    name[nl] = '\0';
    bool skip = false;
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
      skip = skip || strcmp(name, drop[i]) == 0;
    if (!skip)
      env_set(e, name, eq + 1);
  }
  for (unsigned i = 0; i < s->n_env; i++)
    env_set(e, s->env[i].name, s->env[i].value);
  env_set(e, "STIGMER_EXECUTION_ID", t->execution_id);
  char var[STG_WORKFLOW_MAX_NAME + 64];
  for (unsigned i = 0; i < t->wf->n_inputs; i++) {
    const char *name = t->wf->inputs[i].name;
    const char *v = input_value(t, name);
    if (v && stg_workflow_input_env(name, var, sizeof var) == 0)
      env_set(e, var, v);
  }
  for (int i = 0; i < t->cur; i++) {
    if (t->output[i] && stg_workflow_output_env(t->wf->steps[i].name, var, sizeof var) == 0)
      env_set(e, var, t->output[i]);
  }
  return e->oom ? UV_ENOMEM : 0;
}

static void spawn_run(stg__wfr_task_t *t) {
  const stg_workflow_step_t *s = cur_step(t);
  uv_loop_t *loop = &t->r->loop;
  envv_t env = {0};
  t->exited = false;
  t->exited_after_term = false;
  t->exit_status = 0;
  t->term_signal = 0;
  t->spawn_err = 0;
  t->pid = 0;
  t->kill_phase = KILL_NONE;
  t->stdout_len = 0;
  out_pipe_t *ps[2] = {&t->out, &t->err};
  for (int i = 0; i < 2; i++) {
    uv_pipe_init(loop, &ps[i]->pipe, 0);
    ps[i]->pipe.data = t;
    ps[i]->t = t;
    ps[i]->open = true;
    ps[i]->reading = false;
    ps[i]->len = 0;
  }
  t->out.stream = "out";
  t->err.stream = "err";
  t->step_handles = 2;
  bool spawned = false;
  int rc = build_env(t, &env);
  if (rc == 0) {
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&t->out.pipe;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&t->err.pipe;
    char *args[] = {"/bin/sh", "-c", s->run, NULL};
    uv_process_options_t po;
    memset(&po, 0, sizeof po);
    po.exit_cb = on_exit_cb;
    po.file = "/bin/sh";
    po.args = args;
    po.env = env.v;
    po.cwd = s->cwd;
    po.flags = UV_PROCESS_DETACHED; /* its own session and process group */
    po.stdio_count = 3;
    po.stdio = stdio;
    t->proc.data = t;
    rc = uv_spawn(loop, &t->proc, &po);
    spawned = true;
    t->step_handles++; /* closed even when uv_spawn failed */
  }
  env_free(&env);
  if (rc != 0) {
    t->spawn_err = rc;
    stg_warn("step %s of %s: start /bin/sh%s%s: %s", s->name, t->execution_id,
             s->cwd ? " in " : "", s->cwd ? s->cwd : "", uv_strerror(rc));
    if (spawned)
      uv_close((uv_handle_t *)&t->proc, on_step_handle_closed);
    close_pipe(&t->out);
    close_pipe(&t->err);
    return;
  }
  t->pid = t->proc.pid;
  t->proc_open = true;
  stg__wfr_steps_record(t->r->steps_dir, t->pid);
  stg_info("step %s of %s: started (pid %d)", s->name, t->execution_id, t->pid);
  pipes_read(t, true);
  if (s->timeout_ms > 0)
    uv_timer_start(&t->step_timer, on_step_timeout, s->timeout_ms, 0);
}

/* --- agent steps ------------------------------------------------------------------------ */

static const char *lookup(void *data, bool is_step, const char *name) {
  stg__wfr_task_t *t = data;
  if (!is_step)
    return input_value(t, name);
  int i = stg_workflow_step_index(t->wf, name);
  return i >= 0 ? t->output[i] : NULL;
}

static void agent_finished(stg__wfr_task_t *t, bool ok, const char *output, const char *error) {
  free(t->agent_output);
  free(t->agent_error);
  t->agent_ok = ok;
  t->agent_output = output ? strdup(output) : NULL;
  t->agent_error = error ? strdup(error) : NULL;
  step_finished(t);
}

static void agent_poll(stg__wfr_task_t *t) {
  char path[160], what[200];
  snprintf(path, sizeof path, "/v1/tasks/%s?wait=%ums", t->agent_task, (unsigned)AGENT_WAIT_MS);
  snprintf(what, sizeof what, "wait for agent task %s (step %s of %s)", t->agent_task,
           cur_step(t)->name, t->execution_id);
  stg__wfr_call_options_t o = {
      .method = "GET", .path = path, .timeout_ms = AGENT_WAIT_MS + REQUEST_TIMEOUT_MS,
      .max_attempts = 0, .retry_5xx = true, .what = what};
  int rc = stg__wfr_call_start(&t->agent, &o, on_agent);
  if (rc != 0)
    agent_finished(t, false, NULL, "out of memory");
}

static void on_agent(stg__wfr_call_t *c, int err, int status, json_t *body) {
  stg__wfr_task_t *t = c->data;
  char msg[600];
  if (err == 0 && (t->end != END_NONE || t->closing || t->lost))
    err = UV_ECANCELED; /* a late answer after we ended the step */
  if (err != 0) {
    snprintf(msg, sizeof msg, "agent task: %s", uv_strerror(err));
    agent_finished(t, false, NULL, msg);
    return;
  }
  if (t->agent_task[0] == '\0') { /* the reply to POST /v1/tasks */
    const char *id = json_string_value(json_object_get(body, "id"));
    if ((status != 201 && status != 200) || id == NULL) {
      snprintf(msg, sizeof msg, "create the agent task: the server answered %d: %s", status,
               error_message(body));
      agent_finished(t, false, NULL, msg);
      return;
    }
    snprintf(t->agent_task, sizeof t->agent_task, "%s", id);
    stg_info("step %s of %s: agent task %s", cur_step(t)->name, t->execution_id, id);
    agent_poll(t);
    return;
  }
  if (status != 200) {
    snprintf(msg, sizeof msg, "agent task %s: the server answered %d: %s", t->agent_task,
             status, error_message(body));
    agent_finished(t, false, NULL, msg);
    return;
  }
  const char *st = json_string_value(json_object_get(body, "state"));
  if (st == NULL || strcmp(st, "pending") == 0 || strcmp(st, "leased") == 0) {
    agent_poll(t);
    return;
  }
  if (strcmp(st, "succeeded") == 0) {
    const char *out = json_string_value(json_object_get(body, "output"));
    agent_finished(t, true, out ? out : "", NULL);
    return;
  }
  const char *e = json_string_value(json_object_get(body, "error"));
  snprintf(msg, sizeof msg, "agent task %s %s: %s", t->agent_task, st, e ? e : "no reason given");
  agent_finished(t, false, NULL, msg);
}

static void start_agent(stg__wfr_task_t *t) {
  const stg_workflow_step_t *s = cur_step(t);
  char *prompt = NULL;
  t->agent_task[0] = '\0';
  int rc = stg_workflow_render(s->agent, lookup, t, &prompt);
  if (rc != 0) {
    char msg[200];
    snprintf(msg, sizeof msg, "render the prompt: %s", uv_strerror(rc));
    agent_finished(t, false, NULL, msg);
    return;
  }
  uint64_t timeout = s->timeout_ms ? s->timeout_ms : AGENT_DEFAULT_TIMEOUT_MS;
  json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:I}", "kind", "agent", "execution_id",
                          t->execution_id, "step", s->name, "prompt", prompt, "timeout_ms",
                          (json_int_t)timeout);
  free(prompt);
  if (req && s->model)
    json_object_set_new(req, "model", json_string(s->model));
  char what[200];
  snprintf(what, sizeof what, "create the agent task of step %s of %s", s->name,
           t->execution_id);
  stg__wfr_call_options_t o = {
      .method = "POST", .path = "/v1/tasks", .body = req, .timeout_ms = REQUEST_TIMEOUT_MS,
      .max_attempts = 0, .retry_5xx = true, .what = what};
  rc = req ? stg__wfr_call_start(&t->agent, &o, on_agent) : UV_ENOMEM;
  json_decref(req);
  if (rc != 0) {
    agent_finished(t, false, NULL, "out of memory");
    return;
  }
  uv_timer_start(&t->step_timer, on_step_timeout, timeout + AGENT_SLACK_MS, 0);
}

/* --- steps ------------------------------------------------------------------------------ */

/* The step ended (process and pipes closed, or the agent answered): record
 * how, then go on. */
static void step_finished(stg__wfr_task_t *t) {
  const stg_workflow_step_t *s = cur_step(t);
  uv_timer_stop(&t->step_timer);
  uv_timer_stop(&t->kill_timer);
  t->phase = PHASE_IDLE;
  if (!t->aborting)
    stg__wfr_steps_forget(t->r->steps_dir, t->pid); /* else the next runner kills it */
  t->pid = 0;
  end_t end = t->end;
  t->end = END_NONE;
  bool agent = s->kind == STG_WORKFLOW_AGENT;
  bool ok = agent ? t->agent_ok
                  : t->spawn_err == 0 && t->term_signal == 0 && t->exit_status == 0 &&
                        !t->exited_after_term;
  char *output = NULL;
  if (agent && t->agent_output) {
    size_t n = strlen(t->agent_output);
    output = stg__wfr_utf8(t->agent_output, n > STG_WORKFLOW_MAX_VALUE ?
                           STG_WORKFLOW_MAX_VALUE : n, NULL);
  } else if (!agent && t->stdout_len > 0) {
    /* Like $(...): without its trailing newlines. */
    size_t n = t->stdout_len;
    while (n > 0 && (t->stdout_buf[n - 1] == '\n' || t->stdout_buf[n - 1] == '\r'))
      n--;
    output = stg__wfr_utf8(t->stdout_buf, n, NULL);
  }
  free(t->stdout_buf);
  t->stdout_buf = NULL;
  t->stdout_len = 0;
  if (end == END_LOST || t->lost || (end == END_STOP && !ok)) {
    /* Not ours any more, or cut short by our own stop: not finished. */
    stg_info("step %s of %s: %s", s->name, t->execution_id,
             end == END_STOP ? "stopped with the runner; it runs again later"
                             : "abandoned");
    t->state[t->cur] = ST_PENDING;
    free(output);
    advance(t);
    return;
  }
  step_state_t st;
  bool have_code = !agent && t->spawn_err == 0 && t->term_signal == 0;
  if (ok) {
    st = ST_SUCCEEDED;
  } else if (end == END_CANCEL) {
    st = ST_CANCELLED;
    set_error(t, "cancelled");
  } else {
    st = ST_FAILED;
    char d[32];
    if (end == END_TIMEOUT) {
      stg_format_duration(s->timeout_ms ? s->timeout_ms : AGENT_DEFAULT_TIMEOUT_MS, d,
                          sizeof d);
      set_error(t, "step %s timed out after %s", s->name, d);
    } else if (agent)
      set_error(t, "step %s: %s", s->name, t->agent_error ? t->agent_error : "failed");
    else if (t->spawn_err)
      set_error(t, "step %s: start /bin/sh: %s", s->name, uv_strerror(t->spawn_err));
    else if (t->term_signal)
      set_error(t, "step %s was killed by signal %d", s->name, t->term_signal);
    else
      set_error(t, "step %s exited with status %lld", s->name, (long long)t->exit_status);
  }
  if (st != ST_SUCCEEDED)
    t->failed = true;
  t->state[t->cur] = st;
  if (agent && output && t->cur >= 0)
    ev_output_text(t, output);
  stg_info("step %s of %s: %s%s%s", s->name, t->execution_id, state_names[st],
           st == ST_SUCCEEDED ? "" : ": ", st == ST_SUCCEEDED ? "" : t->error);
  ev_step_finished(t, t->cur, st, have_code, t->exit_status, output);
  free(t->output[t->cur]);
  t->output[t->cur] = output;
  free(t->agent_output);
  free(t->agent_error);
  t->agent_output = t->agent_error = NULL;
  advance(t);
}

/* The server accepted step_started: run it. */
static void launch(stg__wfr_task_t *t) {
  t->phase = PHASE_RUNNING;
  t->end = END_NONE;
  t->event_bytes = 0;
  t->event_trunc = false;
  if (cur_step(t)->kind == STG_WORKFLOW_AGENT)
    start_agent(t);
  else
    spawn_run(t);
}

/* --- completion ------------------------------------------------------------------------- */

static void start_close(stg__wfr_task_t *t);

static void on_fin(stg__wfr_call_t *c, int err, int status, json_t *body) {
  stg__wfr_task_t *t = c->data;
  t->done = true;
  if (err == UV_ECANCELED)
    ;
  else if (err != 0)
    stg_warn("finish task %s: %s", t->id, uv_strerror(err));
  else if (status != 200)
    stg_warn("finish task %s: the server answered %d: %s", t->id, status, error_message(body));
  start_close(t);
}

static void finish(stg__wfr_task_t *t, const char *how) {
  json_t *req;
  char path[128], what[160];
  if (strcmp(how, "release") == 0) {
    req = json_pack("{s:s}", "worker", t->r->worker);
    snprintf(path, sizeof path, "/v1/tasks/%s/release", t->id);
    stg_info("task %s (%s): released", t->id, t->execution_id);
  } else {
    req = json_pack("{s:s, s:s, s:o, s:n}", "worker", t->r->worker, "state", how, "error",
                    t->error ? json_string(t->error) : json_null(), "output");
    snprintf(path, sizeof path, "/v1/tasks/%s/complete", t->id);
    stg_info("execution %s %s%s%s", t->execution_id, how, t->error ? ": " : "",
             t->error ? t->error : "");
  }
  snprintf(what, sizeof what, "%s task %s", how[0] == 'r' ? "release" : "complete", t->id);
  stg__wfr_call_options_t o = {
      .method = "POST", .path = path, .body = req, .timeout_ms = REQUEST_TIMEOUT_MS,
      .max_attempts = 0, .retry_5xx = true, .what = what};
  int rc = req ? stg__wfr_call_start(&t->fin, &o, on_fin) : UV_ENOMEM;
  json_decref(req);
  if (rc != 0) {
    stg_error("%s: %s", what, uv_strerror(rc));
    t->done = true;
    start_close(t);
  }
}

/* Decides what comes next. Called after everything that may change it. */
/* Another run of the same task in this runner. */
static bool twin_exists(stg__wfr_task_t *t) {
  for (stg__wfr_task_t *o = t->r->tasks; o; o = o->next)
    if (o != t && strcmp(o->id, t->id) == 0)
      return true;
  return false;
}

static void advance(stg__wfr_task_t *t) {
  if (t->closing) {
    try_close(t);
    return;
  }
  if (t->after_old && !t->lost && !t->aborting) {
    if (twin_exists(t))
      return; /* its step must be gone before ours starts */
    t->after_old = false;
  }
  if (t->lost || t->aborting) {
    if (t->phase == PHASE_RUNNING) {
      end_step(t, END_LOST);
      return; /* step_finished comes back here */
    }
    start_close(t);
    return;
  }
  flush(t);
  if (t->phase == PHASE_RUNNING)
    return;
  if (t->ev.busy || json_array_size(t->queue) > 0 || t->fin.busy || t->done)
    return;
  if (t->phase == PHASE_STARTING) {
    t->phase = PHASE_IDLE;
    if (t->cancel_req) {
      t->state[t->cur] = ST_CANCELLED;
      ev_step_finished(t, t->cur, ST_CANCELLED, false, 0, NULL);
      advance(t);
      return;
    }
    if (!t->r->stopping) {
      launch(t);
      return;
    }
    t->state[t->cur] = ST_PENDING;
  }
  if (t->cancel_req && !t->failed) {
    t->failed = true;
    set_error(t, "cancelled");
  }
  if (t->failed) {
    /* The later steps are skipped; a cancel has already finished them on
     * the server's side. */
    bool queued = false;
    for (unsigned i = 0; i < t->n_steps; i++) {
      if (t->state[i] == ST_PENDING || t->state[i] == ST_RUNNING) {
        t->state[i] = ST_SKIPPED;
        if (!t->cancel_req) {
          ev_step_finished(t, (int)i, ST_SKIPPED, false, 0, NULL);
          queued = true;
        }
      }
    }
    if (queued) {
      flush(t);
      return;
    }
    finish(t, "failed");
    return;
  }
  int next = -1;
  for (unsigned i = 0; i < t->n_steps && next < 0; i++)
    if (t->state[i] == ST_PENDING || t->state[i] == ST_RUNNING)
      next = (int)i;
  if (next < 0) {
    finish(t, "succeeded");
    return;
  }
  if (t->r->stopping) {
    finish(t, "release");
    return;
  }
  t->cur = next;
  t->state[next] = ST_RUNNING;
  t->phase = PHASE_STARTING;
  ev_step_started(t);
  flush(t);
}

/* --- closing ------------------------------------------------------------------------------ */

static void on_handle_closed_common(stg__wfr_task_t *t) {
  if (--t->handles > 0)
    return;
  stg__wfr_t *r = t->r;
  if (t->prev)
    t->prev->next = t->next;
  else
    r->tasks = t->next;
  if (t->next)
    t->next->prev = t->prev;
  r->n_tasks--;
  for (unsigned i = 0; i < t->n_steps; i++)
    free(t->output[i]);
  free(t->output);
  free(t->state);
  free(t->error);
  free(t->stdout_buf);
  free(t->agent_output);
  free(t->agent_error);
  json_decref(t->queue);
  json_decref(t->inputs);
  if (t->wf)
    stg_workflow_free(t->wf);
  free(t);
  for (stg__wfr_task_t *o = r->tasks; o; o = o->next)
    if (o->after_old)
      advance(o); /* frees nothing synchronously */
  stg__wfr_task_gone(r);
}

static void on_timer_closed(uv_handle_t *h) { on_handle_closed_common(h->data); }
static void on_call_closed(stg__wfr_call_t *c) { on_handle_closed_common(c->data); }

static void try_close(stg__wfr_task_t *t) {
  if (!t->closing || t->handles_closing)
    return;
  if (t->ev.busy || t->hb.busy || t->agent.busy || t->fin.busy || t->step_handles > 0)
    return;
  t->handles_closing = true;
  uv_close((uv_handle_t *)&t->step_timer, on_timer_closed);
  uv_close((uv_handle_t *)&t->kill_timer, on_timer_closed);
  uv_close((uv_handle_t *)&t->hb_timer, on_timer_closed);
  stg__wfr_call_close(&t->ev, on_call_closed);
  stg__wfr_call_close(&t->hb, on_call_closed);
  stg__wfr_call_close(&t->agent, on_call_closed);
  stg__wfr_call_close(&t->fin, on_call_closed);
}

static void start_close(stg__wfr_task_t *t) {
  if (t->closing)
    return;
  t->closing = true;
  uv_timer_stop(&t->hb_timer);
  uv_timer_stop(&t->step_timer);
  if (t->lost && !t->done)
    stg_info("task %s (%s): abandoned without completing it", t->id, t->execution_id);
  stg__wfr_call_cancel(&t->ev);
  stg__wfr_call_cancel(&t->hb);
  stg__wfr_call_cancel(&t->agent);
  stg__wfr_call_cancel(&t->fin);
  try_close(t);
}

/* --- the runner's side ---------------------------------------------------------------------- */

stg__wfr_task_t *stg__wfr_task_next(stg__wfr_task_t *t) { return t->next; }

void stg__wfr_task_abandon_id(stg__wfr_t *r, const char *id) {
  for (stg__wfr_task_t *t = r->tasks; t; t = t->next) {
    if (strcmp(t->id, id) == 0 && !t->lost && !t->closing) {
      stg_warn("task %s: claimed again while running it here (its lease had lapsed); "
               "abandoning the old run, starting again from the server's record", id);
      t->lost = true;
      advance(t);
    }
  }
}

void stg__wfr_task_stop(stg__wfr_task_t *t) { advance(t); }

void stg__wfr_task_kill(stg__wfr_task_t *t) {
  if (t->phase == PHASE_RUNNING) {
    stg_info("step %s of %s still runs at the end of the stop time; stopping it",
             cur_step(t)->name, t->execution_id);
    end_step(t, END_STOP);
  }
}

void stg__wfr_task_abort(stg__wfr_task_t *t) {
  t->aborting = true;
  if (t->phase == PHASE_RUNNING && t->step_handles > 0) {
    signal_group(t, SIGKILL);
    close_pipe(&t->out);
    close_pipe(&t->err);
    if (t->proc_open) {
      t->proc_open = false;
      uv_close((uv_handle_t *)&t->proc, on_step_handle_closed);
    }
    return;
  }
  if (t->phase == PHASE_RUNNING)
    stg__wfr_call_cancel(&t->agent);
  start_close(t);
}

static char *copy_capped(const char *s) {
  if (s == NULL)
    return NULL;
  size_t n = strlen(s);
  return stg__wfr_utf8(s, n > STG_WORKFLOW_MAX_VALUE ? STG_WORKFLOW_MAX_VALUE : n, NULL);
}

int stg__wfr_task_start(stg__wfr_t *r, json_t *task) {
  stg__wfr_task_t *t = calloc(1, sizeof *t);
  if (t == NULL)
    return UV_ENOMEM;
  t->r = r;
  t->cur = -1;
  snprintf(t->id, sizeof t->id, "%s", json_string_value(json_object_get(task, "id")) ?: "");
  snprintf(t->execution_id, sizeof t->execution_id, "%s",
           json_string_value(json_object_get(task, "execution_id")) ?: "");
  json_int_t lease = json_integer_value(json_object_get(task, "lease_ms"));
  t->lease_ms = lease > 0 ? (uint64_t)lease : 30000;
  t->hb_every_ms = t->lease_ms / 3 > MIN_HEARTBEAT_MS ? t->lease_ms / 3 : MIN_HEARTBEAT_MS;
  json_t *payload = json_object_get(task, "payload");
  t->inputs = json_object_get(payload, "inputs");
  t->inputs = json_is_object(t->inputs) ? json_incref(t->inputs) : json_object();
  t->queue = json_array();
  const char *def = json_string_value(json_object_get(payload, "definition"));
  char err[1024];
  int rc = def ? stg_workflow_parse(def, strlen(def), t->execution_id, &t->wf, err, sizeof err)
               : UV_EINVAL;
  if (def == NULL)
    snprintf(err, sizeof err, "the task has no workflow definition");
  if (rc != 0) {
    t->wf = NULL;
    t->failed = true;
    set_error(t, "parse the workflow: %s", err);
  } else {
    t->n_steps = t->wf->n_steps;
  }
  t->state = calloc(t->n_steps ? t->n_steps : 1, sizeof *t->state);
  t->output = calloc(t->n_steps ? t->n_steps : 1, sizeof *t->output);
  if (t->state == NULL || t->output == NULL || t->queue == NULL || t->inputs == NULL) {
    free(t->state);
    free(t->output);
    json_decref(t->queue);
    json_decref(t->inputs);
    if (t->wf)
      stg_workflow_free(t->wf);
    free(t->error);
    free(t);
    return UV_ENOMEM;
  }
  /* What the server already knows: succeeded steps are not run again. */
  unsigned done = 0;
  size_t i;
  json_t *ps;
  json_array_foreach(json_object_get(payload, "steps"), i, ps) {
    const char *name = json_string_value(json_object_get(ps, "name"));
    const char *st = json_string_value(json_object_get(ps, "state"));
    int k = t->wf && name ? stg_workflow_step_index(t->wf, name) : -1;
    if (k < 0 || st == NULL)
      continue;
    if (strcmp(st, "succeeded") == 0) {
      t->state[k] = ST_SUCCEEDED;
      t->output[k] = copy_capped(json_string_value(json_object_get(ps, "output")));
      done++;
    } else if (strcmp(st, "failed") == 0 || strcmp(st, "cancelled") == 0) {
      t->state[k] = strcmp(st, "failed") == 0 ? ST_FAILED : ST_CANCELLED;
      t->failed = true;
      set_error(t, "step %s %s", name, st);
      done++;
    } else if (strcmp(st, "skipped") == 0) {
      t->state[k] = ST_SKIPPED;
      done++;
    }
  }
  uv_loop_t *loop = &r->loop;
  uv_timer_init(loop, &t->step_timer);
  uv_timer_init(loop, &t->kill_timer);
  uv_timer_init(loop, &t->hb_timer);
  t->step_timer.data = t->kill_timer.data = t->hb_timer.data = t;
  t->ev.data = t->hb.data = t->agent.data = t->fin.data = t;
  stg__wfr_call_init(loop, &t->ev, r->server);
  stg__wfr_call_init(loop, &t->hb, r->server);
  stg__wfr_call_init(loop, &t->agent, r->server);
  stg__wfr_call_init(loop, &t->fin, r->server);
  t->handles = 7;
  t->next = r->tasks;
  t->after_old = twin_exists(t);
  if (r->tasks)
    r->tasks->prev = t;
  r->tasks = t;
  r->n_tasks++;
  stg_info("task %s: execution %s (%s), %u of %u steps already finished", t->id,
           t->execution_id, t->wf ? t->wf->name : "unparsable", done, t->n_steps);
  uv_timer_start(&t->hb_timer, on_hb_timer, t->hb_every_ms, t->hb_every_ms);
  advance(t);
  return 0;
}
