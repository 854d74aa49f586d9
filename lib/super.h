/* The supervisor: runs the stack's components on one libuv loop, restarts
 * them, captures their logs, and serves the control socket.
 * Contract: docs/internals/supervisor.md, docs/internals/control.md.
 */
#ifndef STG_SUPER_H
#define STG_SUPER_H

#include <stdbool.h>

#include <uv.h>

#include "config.h"

typedef enum {
  STG_CS_STOPPED = 0, /* no process, none wanted */
  STG_CS_STARTING,    /* spawned, not ready yet */
  STG_CS_READY,       /* READY=1 received, or alive for `settle` */
  STG_CS_BACKOFF,     /* exited; waiting to start again */
  STG_CS_STOPPING,    /* asked to stop: SIGTERM sent, waiting for the exit */
  STG_CS_FAILED,      /* too many restarts; waits for `daemon restart` */
  STG_CS_MISSING,     /* its program is not there */
  STG_CS_FETCHING,    /* agent-runner: being downloaded (lib/agentfetch) */
  STG_CS_COUNT
} stg_cstate_t;

const char *stg_cstate_name(stg_cstate_t s);

/* Loads the configuration again (SIGHUP). Fills *out (initialised by the
 * callee) or returns an error with the message in err. */
typedef int (*stg_super_reload_fn)(stg_config_t *out, char *err, size_t errlen,
                                   void *data);

typedef struct {
  stg_config_t *cfg;          /* the configuration; owned by the supervisor
                                 from here on (freed, or replaced on reload) */
  const char *exe;            /* this binary, re-executed for the applets */
  int ready_fd;               /* -1, or a descriptor that gets "ok\n" once the
                                 control socket listens, then is closed */
  bool echo;                  /* copy children's lines to stderr (daemon run) */
  bool color;                 /* colour the echoed name prefixes */
  stg_super_reload_fn reload; /* how SIGHUP reloads the config; NULL: no reload */
  void *reload_data;          /* passed to reload */
} stg_super_options_t;

/* Runs the supervisor until it is stopped (SIGTERM, SIGINT, or a `stop`
 * request). Returns the process exit code: 0 after a clean stop, 1 when
 * another supervisor holds the lock or setup failed (the reason is logged). */
int stg_super_run(uv_loop_t *loop, const stg_super_options_t *o);

#endif
