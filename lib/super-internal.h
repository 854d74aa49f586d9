/* Private parts of the supervisor, shared by super.c (components, the
 * state machine, processes) and super_ctl.c (the control socket). */
#ifndef STG_SUPER_INTERNAL_H
#define STG_SUPER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "agentfetch.h"
#include "config.h"
#include "logstore.h"
#include "super.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

typedef struct stg_super_s stg_super_t;
typedef struct stg_comp_s stg_comp_t;

/* Events of the component state machine. */
typedef enum {
  EV_START = 0, /* start (stack start, dependency ready, restart request) */
  EV_READY,     /* READY=1, or settle elapsed */
  EV_EXIT,      /* the process exited */
  EV_TIMER,     /* the component's timer fired (meaning: timer_reason) */
  EV_STOP,      /* stop (stack stop) */
  EV_RESTART,   /* a `restart` request: stop if running, then start at once */
  EV_WATCHDOG,  /* WATCHDOG=1 */
  EV_GROUP_GONE, /* the last process of its group was reaped */
  EV_COUNT
} stg_cevent_t;

typedef enum {
  TIMER_NONE = 0,
  TIMER_SETTLE,        /* STARTING, notify=no: ready when it fires */
  TIMER_READY_TIMEOUT, /* STARTING: not ready in time */
  TIMER_WATCHDOG,      /* READY: no WATCHDOG=1 in time */
  TIMER_BACKOFF,       /* BACKOFF: start again */
  TIMER_STOP           /* STOPPING: SIGKILL the group */
} stg_timer_reason_t;

/* What happens when a process we are stopping exits. */
typedef enum {
  INTENT_NONE = 0,
  INTENT_STOP,       /* stay stopped */
  INTENT_RESTART,    /* a failure (ready timeout, watchdog): counted restart */
  INTENT_RESTART_NOW /* asked for: start at once, not counted */
} stg_intent_t;

/* One spawned process with its two pipes. Lives until the process handle
 * and both pipes are closed, which may be after the component moved on to
 * a new process (a grandchild can hold a pipe open). */
typedef struct stg_run_s {
  stg_super_t *sup;   /* the supervisor whose run list holds it */
  stg_comp_t *comp;   /* NULL once the component forgot it */
  uv_process_t proc;
  uv_pipe_t out;
  uv_pipe_t err;
  int pid;
  int open_handles;   /* closes still to come */
  bool exited;
  bool paused_out;    /* not reading stdout: the log writer is catching up */
  bool paused_err;    /* the same for stderr */
  char buf_out[65536];
  char buf_err[65536];
  struct stg_run_s *next; /* in sup->runs */
} stg_run_t;

struct stg_comp_s {
  stg_super_t *sup;
  stg_component_id_t id;
  const char *name;
  stg_cstate_t state;
  stg_intent_t intent;
  stg_run_t *run;              /* current process, or NULL */
  int pgid;                    /* its process group (= its pid), 0 if none */
  bool group_lingers;          /* leader gone, group members remain */
  unsigned long long start_ticks; /* /proc start time of the leader */
  uv_timer_t timer;
  stg_timer_reason_t timer_reason;
  uint64_t started_at;         /* uv_now() at spawn */
  uint64_t ready_at;           /* uv_now() at ready */
  uint64_t backoff_until;      /* uv_now() when the next start is due */
  unsigned restarts;           /* restarts since the supervisor started */
  unsigned consecutive;        /* failed starts since the last stable run */
  uint64_t *restart_times;     /* ring of recent restart times (uv_now) */
  unsigned rt_cap, rt_len, rt_head;
  bool watchdog_seen;          /* has sent WATCHDOG=1 since spawn */
  bool has_exited;
  int last_code;               /* -1 when it died by a signal */
  int last_signal;             /* 0 when it exited */
  uint64_t last_exit_wall_us;
  char status_text[256];       /* latest STATUS= */
  char reason[4700];           /* why failed/missing, or how it last ended */
  char program[4096];          /* what runs (agent-runner: its path) */
  stg_logsrc_t *log;
  /* agent-runner fetching (issue 4): the download while FETCHING, and until
   * its done callback after a cancel (a stop waits for it). */
  stg_agentfetch_t *fetch;
  bool fetch_restart;          /* start again when the cancelled fetch is done */
};

typedef enum {
  SUP_STARTING = 0, /* until every component settled once */
  SUP_RUNNING,
  SUP_STOPPING
} stg_sup_state_t;

typedef struct stg_ctl_conn_s stg_ctl_conn_t;

struct stg_super_s {
  uv_loop_t *loop;
  stg_config_t *cfg;
  stg_super_options_t opts;
  stg_sup_state_t state;
  bool restarting_all;      /* stack restart: stop all, then start again */
  bool settled_once;        /* the first settle was announced */
  bool advancing, advance_again;
  uint64_t started_at;      /* uv_now() */
  int exit_code;
  stg_comp_t comp[STG_COMP_COUNT];
  stg_run_t *runs;          /* every live run object */
  stg_logstore_t *logs;
  stg_logsrc_t *syslog;     /* "supervisor" notes */
  stg_logsub_t *echo_sub;
  /* files */
  int lock_fd;
  char run_dir[4096];
  char sock_path[4200];
  char notify_path[4200];
  char pid_path[4200];
  char children_path[4200];
  /* handles */
  uv_signal_t sig_term, sig_int, sig_hup, sig_chld;
  uv_timer_t log_timer;     /* armed only while a pipe is paused for the
                               log writer: resume if the writer stalls */
  bool log_timer_init;
  uv_poll_t notify_poll;
  int notify_fd;
  uv_pipe_t ctl;
  bool ctl_listening;
  stg_ctl_conn_t *conns;
  int open_handles;         /* closes still to come at shutdown */
  bool closing;
  /* systemd */
  char *systemd_notify;     /* NOTIFY_SOCKET the supervisor was given */
  char last_status[256];
  char env_server_addr[300];
};

/* super.c */
void stg__super_dispatch(stg_comp_t *c, stg_cevent_t ev);
void stg__super_advance(stg_super_t *sup);
void stg__super_stop(stg_super_t *sup);
int stg__super_restart(stg_super_t *sup, const char *component, char *err, size_t errlen);
json_t *stg__super_status_json(stg_super_t *sup);
bool stg__super_settled(stg_super_t *sup);
bool stg__super_fetching(stg_super_t *sup); /* a download is transferring */
/* Something the shutdown waits for has ended (a connection, the log store,
 * a download): stop the supervisor if it was the last. */
void stg__super_closed(stg_super_t *sup);

/* super_ctl.c */
int stg__ctl_listen(stg_super_t *sup);
void stg__ctl_settled(stg_super_t *sup); /* answer pending `wait` requests */
/* answer pending `wait` requests that asked for "progress" (a fetch runs) */
void stg__ctl_progress(stg_super_t *sup);
void stg__ctl_close_all(stg_super_t *sup);

#endif
