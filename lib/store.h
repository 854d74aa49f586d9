/* The API server's durable store: executions, their steps and events, and
 * the tasks runners claim. SQLite in WAL mode with synchronous=FULL, so a
 * call that returned 0 has been committed to disk. Every mutating call is
 * one transaction. The schema is versioned (PRAGMA user_version) and
 * migrated on open; a database from a newer stigmer is refused.
 *
 * The store is synchronous and single-threaded: the server calls it from
 * its loop. Results are jansson objects shaped as docs/api.md describes
 * them (new references, the caller decrefs).
 *
 * Errors: UV_ENOENT no such execution or task; UV_EBUSY a conflict (the
 * lease is not this worker's, the step already succeeded, the execution
 * already finished); UV_EINVAL a malformed argument; UV_EIO a database
 * error. stg_store_errmsg() says why in words.
 */
#ifndef STG_STORE_H
#define STG_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "workflow.h"

typedef struct stg_store_s stg_store_t;

/* An execution or task id: "ex_" or "tk_" + 16 hex digits. */
typedef struct {
  char s[32];
} stg_store_id_t;

/* At most this many events per stg_store_events() call. */
#define STG_STORE_EVENTS_MAX 1000

/* The schema version this binary writes. */
int stg_store_schema_version(void);

/* Opens (creating it and its directory, mode 0700, if needed) and migrates
 * the database at path. Returns 0, or a negative error with a message in
 * err (UV_EPROTO for a database newer than this binary). */
int stg_store_open(const char *path, stg_store_t **out, char *err, size_t errlen);
void stg_store_close(stg_store_t *st);

/* Why the last call failed. */
const char *stg_store_errmsg(const stg_store_t *st);

/* Milliseconds since the epoch (the store's clock). */
int64_t stg_store_now(void);
/* RFC 3339 UTC with milliseconds into buf (at least 32 bytes). */
char *stg_store_format_time(int64_t ms, char *buf, size_t len);

/* --- executions -------------------------------------------------------------------- */

/* A new execution. */
typedef struct {
  const stg_workflow_t *wf;  /* the parsed definition */
  const char *definition;    /* its text, stored as given */
  const json_t *inputs;      /* resolved: an object with a string per input */
} stg_store_submit_t;

/* Records a new execution, its steps and one pending workflow task; *id
 * gets its id. */
int stg_store_exec_create(stg_store_t *st, const stg_store_submit_t *o, stg_store_id_t *id);

/* Newest first; state NULL for all. Sets *out to an array of summaries. */
int stg_store_exec_list(stg_store_t *st, int limit, const char *state, json_t **out);

/* The summary plus inputs, error and steps. */
int stg_store_exec_get(stg_store_t *st, const char *id, json_t **out);

/* Cancels a pending or running execution: its pending tasks are
 * cancelled, its unfinished steps too, and execution_finished is
 * recorded. *out gets the summary. UV_EBUSY when already finished. */
int stg_store_exec_cancel(stg_store_t *st, const char *id, json_t **out);

/* What stg_store_events() found. */
typedef struct {
  json_t *events;            /* new reference: an array of EVENT objects */
  int64_t next;              /* the `after` for the next call */
  bool finished;             /* execution_finished is at or before the last */
} stg_store_events_t;

/* Events with seq > after, at most STG_STORE_EVENTS_MAX. */
int stg_store_events(stg_store_t *st, const char *exec_id, int64_t after,
                     stg_store_events_t *out);

/* --- tasks ------------------------------------------------------------------------- */

typedef enum {
  STG_TASK_WORKFLOW = 1,
  STG_TASK_AGENT = 2,
} stg_task_kind_t;

/* A claim. */
typedef struct {
  stg_task_kind_t kind;      /* of the task wanted */
  const char *worker;        /* who claims */
  uint64_t lease_ms;         /* the lease: until now + lease_ms */
} stg_store_claim_t;

/* Claims the oldest pending task of that kind. *task gets the TASK object,
 * or NULL when there is none (and 0 is returned). Claiming a workflow task
 * starts its execution (execution_started, the first time); *exec gets the
 * execution's id when a task was claimed. */
int stg_store_task_claim(stg_store_t *st, const stg_store_claim_t *o, json_t **task,
                         stg_store_id_t *exec);

/* A task as held by a worker: every call below checks that the task is
 * leased to that worker and the lease has not lapsed (else UV_EBUSY). */
typedef struct {
  const char *task_id;       /* "tk_..." */
  const char *worker;        /* the worker that claimed it */
} stg_store_lease_t;

/* Renews the lease for lease_ms. *cancelled: the execution was cancelled. */
int stg_store_task_heartbeat(stg_store_t *st, const stg_store_lease_t *l, uint64_t lease_ms,
                             bool *cancelled);

/* What stg_store_task_events() recorded. */
typedef struct {
  int64_t next;              /* seq of the last event (the `after` that skips them) */
  stg_store_id_t exec;       /* the task's execution */
} stg_store_appended_t;

/* Records a runner's events (an array of E objects, see docs/api.md) for
 * the task's execution and the step states they imply, all or nothing. */
int stg_store_task_events(stg_store_t *st, const stg_store_lease_t *l, const json_t *events,
                          stg_store_appended_t *out);

/* How a task ended. */
typedef struct {
  const char *state;         /* "succeeded" or "failed" */
  const char *error;         /* NULL or why it failed */
  const char *output;        /* NULL or the result (agent tasks) */
} stg_store_result_t;

/* Finishes a leased task. A workflow task finishes its execution (unless
 * it was cancelled). *exec gets the task's execution. */
int stg_store_task_complete(stg_store_t *st, const stg_store_lease_t *l,
                            const stg_store_result_t *r, stg_store_id_t *exec);

/* Gives a leased task back (pending again, or cancelled when its execution
 * was). *kind gets the task's kind. */
int stg_store_task_release(stg_store_t *st, const stg_store_lease_t *l, stg_task_kind_t *kind);

/* Options of an agent task asked for by a workflow runner. */
typedef struct {
  const char *execution_id;   /* an execution not finished */
  const char *step;           /* one of its agent steps */
  const char *prompt;         /* the rendered prompt */
  const char *model;          /* NULL or "" for the runner's default */
  int64_t timeout_ms;         /* 0 for none */
} stg_store_agent_task_t;

/* Creates a pending agent task; *id gets its id. */
int stg_store_task_create_agent(stg_store_t *st, const stg_store_agent_task_t *opts,
                                stg_store_id_t *id);

/* {"id","kind","state","output","error"}; *final when the state is
 * succeeded, failed or cancelled. */
int stg_store_task_get(stg_store_t *st, const char *id, json_t **out, bool *final);

/* Leases that lapsed by now go back to pending (or cancelled when their
 * execution was). *kinds gets a mask of (1 << kind) of the tasks that
 * became pending. */
int stg_store_expire_leases(stg_store_t *st, unsigned *kinds);

/* The earliest lease expiry (ms since the epoch), or -1 when no task is
 * leased. */
int stg_store_next_expiry(stg_store_t *st, int64_t *at);

#endif
