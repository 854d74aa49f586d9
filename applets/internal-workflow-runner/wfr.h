/* The workflow runner's parts, shared by its files:
 *   wfr_call.c    one HTTP exchange with the API server, retried with backoff
 *   wfr_task.c    one claimed workflow task: its steps, events, heartbeats
 *   workflow_runner.c  the claim loop, signals, stopping, main()
 * The API is docs/api.md; the behaviour is documented in docs/run.md.
 */
#ifndef STG_WFR_H
#define STG_WFR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "http.h"
#include "workflow.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

typedef struct stg__wfr_s stg__wfr_t;
typedef struct stg__wfr_task_s stg__wfr_task_t;
typedef struct stg__wfr_call_s stg__wfr_call_t;

/* --- calls ------------------------------------------------------------------------- */

/* Called once per started call. err is 0 when a response arrived (status
 * is its HTTP status, body its JSON or NULL; borrowed for the call); else
 * UV_ECANCELED, or the last transport error once max_attempts ran out.
 * The call may be started again from the callback. */
typedef void (*stg__wfr_call_cb)(stg__wfr_call_t *c, int err, int status, json_t *body);

typedef struct {
  const char *method;       /* "POST", "GET" */
  const char *path;         /* with any query; copied */
  const json_t *body;       /* borrowed, serialised at once; NULL: no body */
  uint64_t timeout_ms;      /* per attempt */
  unsigned max_attempts;    /* 0: retry transport errors for ever */
  bool retry_5xx;           /* also retry 500..599 answers (a store not open) */
  const char *what;         /* for messages: "send events for tk_..." */
} stg__wfr_call_options_t;

struct stg__wfr_call_s {
  void *data;               /* the caller's */
  /* private */
  uv_loop_t *loop;
  const char *server;       /* borrowed from the runner */
  stg_http_request_t http;
  uv_timer_t retry;
  char *method;
  char *path;
  char *body;
  size_t body_len;
  char what[160];
  uint64_t timeout_ms;
  uint64_t delay_ms;
  unsigned attempts;
  unsigned max_attempts;
  bool retry_5xx;
  bool busy;                /* started, callback not yet called */
  bool in_http;             /* a request is in flight (else waiting to retry) */
  bool cancelled;
  bool closed;
  stg__wfr_call_cb cb;
  void (*close_cb)(stg__wfr_call_t *c);
};

/* Initialises the call (opens its timer). */
void stg__wfr_call_init(uv_loop_t *loop, stg__wfr_call_t *c, const char *server);
/* Starts it; the call must not be busy. Returns 0, or UV_ENOMEM /
 * UV_EINVAL (cb will not be called). */
int stg__wfr_call_start(stg__wfr_call_t *c, const stg__wfr_call_options_t *o,
                        stg__wfr_call_cb cb);
/* Ends a busy call early: its callback gets UV_ECANCELED (later, from the
 * loop), or the response when one had already arrived. Nothing when it is
 * not busy. */
void stg__wfr_call_cancel(stg__wfr_call_t *c);
/* Closes the call, which must not be busy; close_cb runs once its handles
 * are closed. */
void stg__wfr_call_close(stg__wfr_call_t *c, void (*close_cb)(stg__wfr_call_t *c));

/* --- the runner ------------------------------------------------------------------ */

struct stg__wfr_s {
  uv_loop_t loop;
  const char *server;       /* the API server's address */
  char worker[300];         /* "<hostname>:<pid>" */
  unsigned concurrency;     /* workflow tasks at once */
  uint64_t stop_timeout_ms; /* what the supervisor allows on SIGTERM */
  uint64_t kill_grace_ms;   /* SIGTERM to a step, this long, then SIGKILL */
  stg__wfr_task_t *tasks;   /* doubly linked list */
  unsigned n_tasks;
  char steps_dir[4200];     /* records of running steps (wfr_steps.c); "": none */
  bool stopping;            /* no more claims; steps finish or are killed */
  bool killing;             /* the drain time is over: kill the steps */
};

/* --- tasks ------------------------------------------------------------------------- */

/* Starts running a claimed task (the TASK object of the claim reply). The
 * task adds itself to r->tasks and removes itself when it is done, then
 * calls stg__wfr_task_gone(). Returns 0 or UV_ENOMEM. */
int stg__wfr_task_start(stg__wfr_t *r, json_t *task);
/* The runner is stopping (r->stopping set): a task between steps releases
 * itself; one in a step waits for it to end. */
void stg__wfr_task_stop(stg__wfr_task_t *t);
/* The drain time is over (r->killing set): kill the running step, then
 * release. */
void stg__wfr_task_kill(stg__wfr_task_t *t);
/* Out of time: drop the task now (no release), close its handles. */
void stg__wfr_task_abort(stg__wfr_task_t *t);
/* The next task in r->tasks, or NULL. */
stg__wfr_task_t *stg__wfr_task_next(stg__wfr_task_t *t);
/* A claim returned a task that runs here: its lease had lapsed. Abandons
 * the old run (its step is stopped, nothing more is reported). */
void stg__wfr_task_abandon_id(stg__wfr_t *r, const char *id);
/* Defined by workflow_runner.c: a task has left r->tasks and is freed. */
void stg__wfr_task_gone(stg__wfr_t *r);

/* --- records of running steps (wfr_steps.c) ----------------------------------------- */

/* Creates $home/run/steps into dir. Returns 0, UV_ENOTSUP where steps
 * are not recorded, or the mkdir error. */
int stg__wfr_steps_init(const char *home, char *dir, size_t len);
/* Kills the process groups of steps whose runner is gone; forgets them. */
void stg__wfr_steps_sweep(const char *dir);
/* Records a step's process (the leader of its group), or forgets it. */
void stg__wfr_steps_record(const char *dir, int pid);
void stg__wfr_steps_forget(const char *dir, int pid);

/* Copies len bytes into a new NUL-terminated string that is valid UTF-8:
 * invalid sequences and NUL bytes become U+FFFD. *out_len gets its length
 * (may be NULL). Returns NULL when out of memory. */
char *stg__wfr_utf8(const char *s, size_t len, size_t *out_len);

#endif
