/* The supervisor: components as explicit state machines on one uv loop.
 *
 * libuv callbacks only translate what happened into an event and call
 * stg__super_dispatch(); the dispatch function is the one place where a
 * component changes state. stg__super_advance() then applies the stack's
 * rules: start order (server first, runners once it is ready), stop order
 * (runners, then the server), and announcing readiness.
 */
#include "super-internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include "agentbin.h"

#include "log.h"
#include "notify.h"
#include "parse.h"
#include "proc.h"
#include "version.h"

extern char **environ;

static const char *const state_names[STG_CS_COUNT] = {
    "stopped", "starting", "ready", "backoff", "stopping", "failed", "missing", "fetching"};

const char *stg_cstate_name(stg_cstate_t s) {
  return (unsigned)s < STG_CS_COUNT ? state_names[s] : "?";
}

static uint64_t wall_us(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

static void format_time(uint64_t us, char *buf, size_t len) {
  time_t s = (time_t)(us / 1000000u);
  struct tm tm;
  gmtime_r(&s, &tm);
  snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
           (unsigned)(us % 1000000u));
}

/* The session of a process, or -1. */
static int proc_session(int pid) {
  pid_t s = getsid(pid);
  return s < 0 ? -1 : (int)s;
}

static void sup_note(stg_super_t *sup, stg_comp_t *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void sup_note(stg_super_t *sup, stg_comp_t *c, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (c != NULL) {
    stg_info("%s: %s", c->name, msg);
    if (c->log)
      stg_logsrc_note(c->log, "%s", msg);
  } else {
    stg_info("%s", msg);
  }
}

/* --- systemd notification of the supervisor itself ---------------------------- */

static void systemd_notify(stg_super_t *sup, const char *msg) {
  if (sup->systemd_notify == NULL)
    return;
  setenv("NOTIFY_SOCKET", sup->systemd_notify, 1);
  int rc = stg_notify(msg);
  unsetenv("NOTIFY_SOCKET");
  if (rc < 0)
    stg_debug("notify systemd: %s", uv_strerror(rc));
}

static void systemd_status(stg_super_t *sup) {
  if (sup->systemd_notify == NULL)
    return;
  char st[256];
  int off = snprintf(st, sizeof st, "STATUS=");
  for (int i = 0; i < STG_COMP_COUNT && off < (int)sizeof st; i++)
    off += snprintf(st + off, sizeof st - (size_t)off, "%s%s %s", i ? ", " : "",
                    sup->comp[i].name, stg_cstate_name(sup->comp[i].state));
  if (strcmp(st, sup->last_status) == 0)
    return;
  snprintf(sup->last_status, sizeof sup->last_status, "%s", st);
  systemd_notify(sup, st);
}

/* --- files: run/, the lock, the pid file, children.json --------------------------- */

static int write_atomic(const char *path, const char *data, size_t len) {
  char tmp[4300];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  const char *p = data;
  size_t left = len;
  while (left > 0) {
    ssize_t w = write(fd, p, left);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      int e = errno;
      close(fd);
      unlink(tmp);
      return -e;
    }
    p += w;
    left -= (size_t)w;
  }
  if (close(fd) != 0 || rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    return -e;
  }
  return 0;
}

static int make_dir(const char *path, mode_t mode, bool exact_mode) {
  if (mkdir(path, mode) != 0 && errno != EEXIST)
    return -errno;
  struct stat st;
  if (stat(path, &st) != 0)
    return -errno;
  if (!S_ISDIR(st.st_mode))
    return UV_ENOTDIR;
  if (exact_mode && (st.st_mode & 07777) != mode && chmod(path, mode) != 0)
    return -errno;
  return 0;
}

static void write_children(stg_super_t *sup) {
  json_t *arr = json_array();
  for (int i = 0; i < STG_COMP_COUNT; i++) {
    stg_comp_t *c = &sup->comp[i];
    if (c->pgid <= 0)
      continue;
    json_array_append_new(arr, json_pack("{s:s, s:i, s:I}", "component", c->name, "pid",
                                         c->pgid, "start_time",
                                         (json_int_t)c->start_ticks));
  }
  char *s = json_dumps(arr, JSON_COMPACT);
  json_decref(arr);
  if (s == NULL)
    return;
  int rc = write_atomic(sup->children_path, s, strlen(s));
  if (rc < 0)
    stg_warn("write %s: %s", sup->children_path, uv_strerror(rc));
  free(s);
}

/* A new supervisor cleans up after one that died without stopping its
 * children (SIGKILL). A recorded pid is signalled only if its start time
 * still matches; members of its session are signalled only while the
 * recorded leader is gone (a pid in use as a session id is never recycled). */
static void kill_leftovers(stg_super_t *sup) {
  json_error_t jerr;
  json_t *arr = json_load_file(sup->children_path, 0, &jerr);
  if (arr == NULL)
    return;
  size_t i;
  json_t *e;
  json_array_foreach(arr, i, e) {
    json_int_t pid = json_integer_value(json_object_get(e, "pid"));
    json_int_t st = json_integer_value(json_object_get(e, "start_time"));
    const char *name = json_string_value(json_object_get(e, "component"));
    if (pid <= 1)
      continue;
    unsigned long long now_st = stg_proc_start_ticks((int)pid, NULL);
    if (now_st != 0 && now_st == (unsigned long long)st) {
      stg_warn("killing leftover %s (pid %lld) of a previous supervisor",
               name ? name : "?", (long long)pid);
      kill(-(pid_t)pid, SIGKILL);
      kill((pid_t)pid, SIGKILL);
    } else if (now_st != 0) {
      stg_info("pid %lld of a previous %s now belongs to another process; "
               "left alone", (long long)pid, name ? name : "component");
    } else {
#if defined(__linux__)
      /* The leader is gone; its session may still have members. */
      DIR *d = opendir("/proc");
      struct dirent *de;
      while (d && (de = readdir(d)) != NULL) {
        char *end;
        long p = strtol(de->d_name, &end, 10);
        if (*end != '\0' || p <= 1 || p == getpid())
          continue;
        if (proc_session((int)p) == (int)pid) {
          stg_warn("killing leftover pid %ld of a previous %s's session",
                   p, name ? name : "component");
          kill((pid_t)p, SIGKILL);
        }
      }
      if (d)
        closedir(d);
#endif
    }
  }
  json_decref(arr);
  unlink(sup->children_path);
}

static int take_lock(stg_super_t *sup) {
  char path[4200];
  snprintf(path, sizeof path, "%s/supervisor.lock", sup->run_dir);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    stg_error("open %s: %s", path, strerror(errno));
    return -1;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    close(fd);
    if (e == EWOULDBLOCK) {
      char buf[32] = "";
      FILE *f = fopen(sup->pid_path, "re");
      if (f) {
        if (fgets(buf, sizeof buf, f) == NULL)
          buf[0] = '\0';
        fclose(f);
      }
      buf[strcspn(buf, "\n")] = '\0';
      stg_error("a supervisor is already running (pid %s)", buf[0] ? buf : "unknown");
      return -2;
    }
    stg_error("lock %s: %s", path, strerror(e));
    return -1;
  }
  sup->lock_fd = fd;
  return 0;
}

/* --- processes ---------------------------------------------------------------------- */

static void kill_group(stg_comp_t *c, int sig) {
  if (c->pgid > 0) {
    if (kill(-(pid_t)c->pgid, sig) != 0 && c->run && !c->run->exited)
      kill((pid_t)c->pgid, sig);
  }
}

static bool group_alive(int pgid) {
  return pgid > 0 && kill(-(pid_t)pgid, 0) == 0;
}

static void run_unlink(stg_super_t *sup, stg_run_t *r) {
  for (stg_run_t **pp = &sup->runs; *pp; pp = &(*pp)->next) {
    if (*pp == r) {
      *pp = r->next;
      return;
    }
  }
}

static void on_run_handle_closed(uv_handle_t *h) {
  stg_run_t *r = h->data;
  r->open_handles--;
  if (r->open_handles == 0) {
    stg_super_t *sup = r->sup;
    run_unlink(sup, r);
    if (r->comp && r->comp->run == r)
      r->comp->run = NULL;
    free(r);
    if (sup->closing)
      stg__super_closed(sup);
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  stg_run_t *r = h->data;
  (void)suggested;
  if ((uv_pipe_t *)h == &r->out)
    *buf = uv_buf_init(r->buf_out, sizeof r->buf_out);
  else
    *buf = uv_buf_init(r->buf_err, sizeof r->buf_err);
}

static void on_log_timer(uv_timer_t *t);

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  stg_run_t *r = s->data;
  stg_log_stream_t stream = (uv_pipe_t *)s == &r->out ? STG_LOGSTREAM_OUT : STG_LOGSTREAM_ERR;
  stg_comp_t *c = r->comp;
  if (n > 0) {
    if (c && c->log) {
      stg_logsrc_feed(c->log, r->pid, stream, buf->base, (size_t)n);
      /* Pacing: a child writing faster than a healthy disk takes waits on
       * its pipe instead of losing lines; a stalled or failing disk never
       * holds it (docs/internals/logs.md). */
      stg_super_t *sup = c->sup;
      if (!sup->closing && stg_logstore_busy(sup->logs)) {
        uv_read_stop(s);
        if (stream == STG_LOGSTREAM_OUT)
          r->paused_out = true;
        else
          r->paused_err = true;
        if (!uv_is_active((uv_handle_t *)&sup->log_timer))
          uv_timer_start(&sup->log_timer, on_log_timer, STG_LOGSTORE_STALL_MS,
                         STG_LOGSTORE_STALL_MS);
      }
    }
    return;
  }
  if (n == 0)
    return;
  /* EOF or an error: the last partial line is kept. */
  if (c && c->log)
    stg_logsrc_eof(c->log, r->pid, stream);
  uv_read_stop(s);
  uv_close((uv_handle_t *)s, on_run_handle_closed);
}

/* Reads the pipes that were paused for the log writer again. */
static void resume_paused(stg_super_t *sup) {
  uv_timer_stop(&sup->log_timer);
  for (stg_run_t *r = sup->runs; r; r = r->next) {
    if (r->paused_out && !uv_is_closing((uv_handle_t *)&r->out))
      uv_read_start((uv_stream_t *)&r->out, on_alloc, on_read);
    if (r->paused_err && !uv_is_closing((uv_handle_t *)&r->err))
      uv_read_start((uv_stream_t *)&r->err, on_alloc, on_read);
    r->paused_out = r->paused_err = false;
  }
}

/* The writer drained its queue: read on. */
static void on_log_room(void *arg) { resume_paused(arg); }

/* While pipes are paused: a writer that stopped making progress (a hung
 * disk) must not hold the children; read on, and lines past the queue's
 * cap are dropped and counted. */
static void on_log_timer(uv_timer_t *t) {
  stg_super_t *sup = container_of(t, stg_super_t, log_timer);
  if (stg_logstore_stalled(sup->logs) || !stg_logstore_busy(sup->logs))
    resume_paused(sup);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int term_signal) {
  stg_run_t *r = container_of(p, stg_run_t, proc);
  r->exited = true;
  stg_comp_t *c = r->comp;
  if (c != NULL && c->run == r) {
    c->has_exited = true;
    c->last_code = term_signal ? -1 : (int)status;
    c->last_signal = term_signal;
    c->last_exit_wall_us = wall_us();
    stg__super_dispatch(c, EV_EXIT);
  }
  uv_close((uv_handle_t *)p, on_run_handle_closed);
}

static void env_add(char ***envp, size_t *n, size_t *cap, const char *kv) {
  if (*n + 2 > *cap) {
    size_t nc = *cap ? *cap * 2 : 64;
    char **ne = realloc(*envp, nc * sizeof(char *));
    if (ne == NULL)
      return;
    *envp = ne;
    *cap = nc;
  }
  (*envp)[(*n)++] = strdup(kv);
  (*envp)[*n] = NULL;
}

static bool env_is_ours(const char *kv, const stg_component_config_t *cc) {
  static const char *const ours[] = {
      "NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID=", "LISTEN_FDS=",
      "LISTEN_PID=", "LISTEN_FDNAMES=", "STIGMER_HOME=", "STIGMER_COMPONENT=",
      "STIGMER_SERVER_ADDR=", "STIGMER_BACKEND_ENDPOINT=", "LOG_LEVEL=",
      "STIGMER_SUPERVISOR_PID="};
  for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++)
    if (strncmp(kv, ours[i], strlen(ours[i])) == 0)
      return true;
  for (unsigned i = 0; i < cc->n_env; i++) {
    const char *eq = strchr(cc->env[i], '=');
    size_t l = (size_t)(eq - cc->env[i]) + 1;
    if (strncmp(kv, cc->env[i], l) == 0)
      return true;
  }
  return false;
}

static char **build_env(stg_comp_t *c) {
  stg_super_t *sup = c->sup;
  const stg_component_config_t *cc = &sup->cfg->component[c->id];
  char **envp = NULL;
  size_t n = 0, cap = 0;
  for (char **e = environ; *e; e++)
    if (!env_is_ours(*e, cc))
      env_add(&envp, &n, &cap, *e);
  char kv[4400];
  snprintf(kv, sizeof kv, "STIGMER_HOME=%s", sup->cfg->home);
  env_add(&envp, &n, &cap, kv);
  snprintf(kv, sizeof kv, "STIGMER_COMPONENT=%s", c->name);
  env_add(&envp, &n, &cap, kv);
  snprintf(kv, sizeof kv, "STIGMER_SERVER_ADDR=%s", sup->env_server_addr);
  env_add(&envp, &n, &cap, kv);
  snprintf(kv, sizeof kv, "STIGMER_BACKEND_ENDPOINT=%s", sup->env_server_addr);
  env_add(&envp, &n, &cap, kv);
  snprintf(kv, sizeof kv, "NOTIFY_SOCKET=%s", sup->notify_path);
  env_add(&envp, &n, &cap, kv);
  snprintf(kv, sizeof kv, "LOG_LEVEL=%s", stg_log_level_name(sup->cfg->log.level));
  env_add(&envp, &n, &cap, kv);
  snprintf(kv, sizeof kv, "STIGMER_SUPERVISOR_PID=%d", (int)getpid());
  env_add(&envp, &n, &cap, kv);
  if (cc->watchdog_ms > 0) {
    snprintf(kv, sizeof kv, "WATCHDOG_USEC=%llu",
             (unsigned long long)cc->watchdog_ms * 1000ull);
    env_add(&envp, &n, &cap, kv);
  }
  for (unsigned i = 0; i < cc->n_env; i++)
    env_add(&envp, &n, &cap, cc->env[i]);
  return envp;
}

static void free_env(char **envp) {
  if (envp == NULL)
    return;
  for (char **e = envp; *e; e++)
    free(*e);
  free(envp);
}

static int agent_fetch(stg_comp_t *c, const char *missing);

/* Where the agent-runner is, extracting the embedded one when needed.
 * Returns 0 with c->program set, 1 when it is missing (c->reason says
 * why), 2 when a fetch is under way, or a negative error. */
static int agent_program(stg_comp_t *c, bool full_check) {
  const stg_config_t *cfg = c->sup->cfg;
  stg_agentbin_state_t st;
  char desc[1024] = "";
  stg_agentbin_options_t eo = {full_check ? STG_AGENTBIN_FULL_CHECK : 0, NULL};
  int rc = stg_agentbin_ensure_ex(cfg, &eo, c->program, sizeof c->program, &st, desc,
                                  sizeof desc);
  if (rc < 0) {
    snprintf(c->reason, sizeof c->reason, "%s", desc[0] ? desc : uv_strerror(rc));
    return rc;
  }
  if (desc[0] && st == STG_AGENTBIN_READY)
    sup_note(c->sup, c, "%s", desc);
  if (st == STG_AGENTBIN_MISSING) {
    /* agent-runner fetching (issue 4): from the cache, or a download. */
    rc = agent_fetch(c, desc);
    if (rc != 0)
      return rc;
    rc = stg_agentbin_ensure_ex(cfg, &eo, c->program, sizeof c->program, &st, desc,
                                sizeof desc);
    if (rc < 0) {
      snprintf(c->reason, sizeof c->reason, "%s", desc[0] ? desc : uv_strerror(rc));
      return rc;
    }
    if (st == STG_AGENTBIN_MISSING) {
      snprintf(c->reason, sizeof c->reason, "%s", desc);
      return 1;
    }
  }
  return 0;
}

/* --- agent-runner fetching (issue 4) ------------------------------------------------
 * When agentbin reports MISSING and this configuration can fetch
 * (lib/agentfetch), the component goes to FETCHING: the cached download is
 * installed at once if there is a verified one, else a download starts and
 * retries with backoff for as long as the supervisor runs. Its done callback
 * starts the component (STARTING) or leaves it MISSING after a fatal
 * failure. A stop cancels it; has_process() and maybe_done() wait for its
 * done callback. */

static void fetch_progress(stg_agentfetch_t *af) {
  stg_comp_t *c = af->data;
  stg__ctl_progress(c->sup);
}

static void fetch_failure(stg_agentfetch_t *af, const char *reason, bool will_retry,
                          uint64_t retry_in_ms) {
  stg_comp_t *c = af->data;
  char w[32];
  if (will_retry)
    snprintf(c->reason, sizeof c->reason, "fetch attempt %u failed: %s; retrying in %s",
             af->attempts, reason, stg_format_duration(retry_in_ms, w, sizeof w));
  else
    snprintf(c->reason, sizeof c->reason, "fetch attempt %u failed: %s; giving up",
             af->attempts, reason);
  stg_warn("%s: %s", c->name, c->reason);
  if (c->log)
    stg_logsrc_note(c->log, "%s", c->reason);
  /* Waiting for a retry counts as settled, like BACKOFF. */
  stg__super_advance(c->sup);
}

static void do_start(stg_comp_t *c, bool full_check);
static void set_state(stg_comp_t *c, stg_cstate_t s);

static void fetch_done(stg_agentfetch_t *af, int status) {
  stg_comp_t *c = af->data;
  stg_super_t *sup = c->sup;
  bool again = c->fetch_restart;
  c->fetch = NULL;
  c->fetch_restart = false;
  if (status == 0)
    sup_note(sup, c, "downloaded agent-runner %s and verified its sha256 (%s)",
             af->plan.version, af->plan.file);
  if (sup->closing) {
    free(af);
    stg__super_closed(sup);
    return;
  }
  if (c->state == STG_CS_FETCHING && sup->state != SUP_STOPPING &&
      !sup->restarting_all) {
    if (status == 0 || (status == UV_ECANCELED && again)) {
      do_start(c, true);
    } else {
      if (status != UV_ECANCELED)
        snprintf(c->reason, sizeof c->reason, "fetch of agent-runner %s failed: %s",
                 af->plan.version, af->last_error[0] ? af->last_error : uv_strerror(status));
      set_state(c, STG_CS_MISSING);
      sup_note(sup, c, "missing: %s", c->reason);
    }
  } else if (c->state == STG_CS_FETCHING) {
    set_state(c, STG_CS_STOPPED);
  } else if (again && c->state == STG_CS_STOPPED && sup->state != SUP_STOPPING &&
             !sup->restarting_all) {
    do_start(c, true);
  }
  free(af);
  stg__super_advance(sup);
}

/* The agent-runner is missing (why: missing). Returns 0 when it was installed
 * from the cache, 2 when a fetch is under way, 1 when it cannot be fetched
 * (c->reason says why and what to do), or a negative error. */
static int agent_fetch(stg_comp_t *c, const char *missing) {
  stg_super_t *sup = c->sup;
  if (c->fetch != NULL) {
    /* A cancelled fetch is still closing: start again once it is done. */
    c->fetch_restart = true;
    return 2;
  }
  stg_agentfetch_plan_t plan;
  char why[1024];
  int rc = stg_agentfetch_plan(sup->cfg, &plan, why, sizeof why);
  if (rc != 0) {
    snprintf(c->reason, sizeof c->reason, "%s; cannot fetch: %s", missing, why);
    return rc == UV_ENOMEM ? rc : 1;
  }
  rc = stg_agentfetch_install_cached(sup->cfg, &plan, why, sizeof why);
  if (rc == 0) {
    sup_note(sup, c, "%s", why);
    return 0;
  }
  if (rc < 0) {
    snprintf(c->reason, sizeof c->reason, "%s", why);
    return rc;
  }
  stg_agentfetch_t *af = calloc(1, sizeof *af);
  if (af == NULL) {
    snprintf(c->reason, sizeof c->reason, "fetch: out of memory");
    return UV_ENOMEM;
  }
  stg_agentfetch_options_t fo;
  memset(&fo, 0, sizeof fo);
  fo.cfg = sup->cfg;
  fo.plan = &plan;
  fo.progress = fetch_progress;
  fo.failure = fetch_failure;
  fo.done = fetch_done;
  fo.data = c;
  char desc[1024] = "";
  rc = stg_agentfetch_start(sup->loop, af, &fo, desc, sizeof desc);
  if (rc == UV_EBUSY) {
    /* `stigmer agent-runner fetch` is downloading it: look again after a
     * backoff, when it is likely in the cache. */
    free(af);
    snprintf(c->reason, sizeof c->reason, "%s", desc);
    return rc;
  }
  if (rc != 0) {
    free(af);
    snprintf(c->reason, sizeof c->reason, "%s; cannot fetch: %s", missing, desc);
    return 1;
  }
  c->fetch = af;
  c->fetch_restart = false;
  snprintf(c->reason, sizeof c->reason, "fetching agent-runner %s from %s", plan.version,
           plan.url);
  sup_note(sup, c, "%s (%s)", c->reason, why);
  return 2;
}

/* A download is transferring (not waiting for a retry). */
bool stg__super_fetching(stg_super_t *sup) {
  const stg_comp_t *c = &sup->comp[STG_COMP_AGENT_RUNNER];
  return c->state == STG_CS_FETCHING && c->fetch != NULL && !c->fetch->waiting;
}

static void timer_arm(stg_comp_t *c, stg_timer_reason_t why, uint64_t ms);
static void timer_cancel(stg_comp_t *c);

/* Spawns the component. Returns 0, 1 when the program is missing, 2 when
 * it is being fetched, or a negative error (c->reason says what). */
static int spawn(stg_comp_t *c, bool full_check) {
  stg_super_t *sup = c->sup;
  char *args[3];
  if (c->id == STG_COMP_AGENT_RUNNER) {
    int rc = agent_program(c, full_check);
    if (rc != 0)
      return rc;
    args[0] = c->program;
    args[1] = NULL;
  } else {
    snprintf(c->program, sizeof c->program, "%s", sup->opts.exe);
    args[0] = "stigmer";
    args[1] = c->id == STG_COMP_SERVER ? "internal-server" : "internal-workflow-runner";
    args[2] = NULL;
  }
  stg_run_t *r = calloc(1, sizeof *r);
  if (r == NULL) {
    snprintf(c->reason, sizeof c->reason, "spawn: out of memory");
    return UV_ENOMEM;
  }
  r->sup = sup;
  r->comp = c;
  r->proc.data = r;
  uv_pipe_init(sup->loop, &r->out, 0);
  uv_pipe_init(sup->loop, &r->err, 0);
  r->out.data = r;
  r->err.data = r;
  r->open_handles = 2;
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE; /* /dev/null */
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&r->out;
  stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[2].data.stream = (uv_stream_t *)&r->err;
  char **envp = build_env(c);
  uv_process_options_t po;
  memset(&po, 0, sizeof po);
  po.exit_cb = on_exit_cb;
  po.file = c->program;
  po.args = args;
  po.env = envp;
  po.stdio_count = 3;
  po.stdio = stdio;
  po.flags = UV_PROCESS_DETACHED; /* setsid: its own session and group */
  int rc = uv_spawn(sup->loop, &r->proc, &po);
  free_env(envp);
  r->next = sup->runs;
  sup->runs = r;
  r->open_handles++; /* the process handle: closed even when spawn failed */
  if (rc != 0) {
    snprintf(c->reason, sizeof c->reason, "spawn %s: %s", c->program, uv_strerror(rc));
    r->comp = NULL;
    r->exited = true;
    uv_close((uv_handle_t *)&r->proc, on_run_handle_closed);
    uv_close((uv_handle_t *)&r->out, on_run_handle_closed);
    uv_close((uv_handle_t *)&r->err, on_run_handle_closed);
    return rc;
  }
  r->pid = r->proc.pid;
  c->run = r;
  c->pgid = r->pid;
  c->group_lingers = false;
  c->start_ticks = stg_proc_start_ticks(r->pid, NULL);
  c->started_at = uv_now(sup->loop);
  c->watchdog_seen = false;
  c->status_text[0] = '\0';
  uv_read_start((uv_stream_t *)&r->out, on_alloc, on_read);
  uv_read_start((uv_stream_t *)&r->err, on_alloc, on_read);
  write_children(sup);
  sup_note(sup, c, "started (pid %d): %s%s%s", r->pid, c->program,
           args[1] ? " " : "", args[1] ? args[1] : "");
  return 0;
}

/* --- the state machine ------------------------------------------------------------- */

static void on_timer(uv_timer_t *t) {
  stg_comp_t *c = container_of(t, stg_comp_t, timer);
  stg__super_dispatch(c, EV_TIMER);
}

static void timer_arm(stg_comp_t *c, stg_timer_reason_t why, uint64_t ms) {
  c->timer_reason = why;
  uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void timer_cancel(stg_comp_t *c) {
  c->timer_reason = TIMER_NONE;
  uv_timer_stop(&c->timer);
}

static const stg_component_config_t *policy(stg_comp_t *c) {
  return &c->sup->cfg->component[c->id];
}

static void set_state(stg_comp_t *c, stg_cstate_t s) {
  if (c->state == s)
    return;
  stg_debug("%s: %s -> %s", c->name, stg_cstate_name(c->state), stg_cstate_name(s));
  c->state = s;
}

static void describe_exit(stg_comp_t *c, char *buf, size_t len) {
  if (c->last_signal)
    snprintf(buf, len, "killed by signal %d (%s)", c->last_signal,
             strsignal(c->last_signal));
  else
    snprintf(buf, len, "exited with status %d", c->last_code);
}

/* Starts the process; on failure goes to MISSING or BACKOFF. */
static void do_start(stg_comp_t *c, bool full_check);

/* Counts one restart; returns false when that is more than the cap within
 * the window (the component is then FAILED). */
static bool count_restart(stg_comp_t *c) {
  const stg_component_config_t *p = policy(c);
  uint64_t now = uv_now(c->sup->loop);
  unsigned want = p->max_restarts + 1 > 4096 ? 4096 : (unsigned)p->max_restarts + 1;
  if (c->rt_cap != want) {
    free(c->restart_times);
    c->restart_times = calloc(want, sizeof(uint64_t));
    c->rt_cap = c->restart_times ? want : 0;
    c->rt_len = c->rt_head = 0;
  }
  /* Forget restarts older than the window. */
  while (c->rt_len > 0) {
    unsigned oldest = (c->rt_head + c->rt_cap - c->rt_len) % c->rt_cap;
    if (now - c->restart_times[oldest] <= p->restart_window_ms)
      break;
    c->rt_len--;
  }
  if (c->rt_len >= (unsigned)p->max_restarts || c->rt_cap == 0)
    return false;
  c->restart_times[c->rt_head] = now;
  c->rt_head = (c->rt_head + 1) % c->rt_cap;
  if (c->rt_len < c->rt_cap)
    c->rt_len++;
  c->restarts++;
  return true;
}

static uint64_t backoff_delay(stg_comp_t *c) {
  const stg_component_config_t *p = policy(c);
  uint64_t d = p->backoff_initial_ms;
  for (unsigned i = 1; i < c->consecutive && d < p->backoff_max_ms; i++)
    d *= 2;
  if (d > p->backoff_max_ms)
    d = p->backoff_max_ms;
  /* Jitter: somewhere in [d/2, d], so restarts of several components
   * do not march in step. */
  if (d >= 2)
    d = d / 2 + (uint64_t)rand() % (d / 2 + 1);
  return d;
}

/* After an exit not asked for (or a kill for a failed start): restart now,
 * later, or give up. */
static void after_failure(stg_comp_t *c, bool stable) {
  stg_super_t *sup = c->sup;
  if (sup->state == SUP_STOPPING || sup->restarting_all) {
    set_state(c, STG_CS_STOPPED);
    return;
  }
  if (stable)
    c->consecutive = 0;
  if (!count_restart(c)) {
    char w[32];
    const stg_component_config_t *p = policy(c);
    char last[512];
    snprintf(last, sizeof last, "%.500s", c->reason);
    snprintf(c->reason, sizeof c->reason, "more than %lld restarts in %s; last: %s",
             (long long)p->max_restarts,
             stg_format_duration(p->restart_window_ms, w, sizeof w), last);
    set_state(c, STG_CS_FAILED);
    sup_note(sup, c, "failed: %s (stigmer daemon restart %s starts it again)",
             c->reason, c->name);
    return;
  }
  if (stable) {
    sup_note(sup, c, "restarting now (it had been ready for %llus)",
             (unsigned long long)((uv_now(sup->loop) - c->ready_at) / 1000));
    do_start(c, false);
    return;
  }
  c->consecutive++;
  uint64_t d = backoff_delay(c);
  c->backoff_until = uv_now(sup->loop) + d;
  set_state(c, STG_CS_BACKOFF);
  timer_arm(c, TIMER_BACKOFF, d);
  sup_note(sup, c, "restarting in %llums", (unsigned long long)d);
}

static void do_start(stg_comp_t *c, bool full_check) {
  timer_cancel(c);
  c->intent = INTENT_NONE;
  int rc = spawn(c, full_check);
  if (rc == 2) { /* agent-runner fetching (issue 4): fetch_done goes on */
    set_state(c, STG_CS_FETCHING);
    return;
  }
  if (rc == 1) {
    set_state(c, STG_CS_MISSING);
    sup_note(c->sup, c, "missing: %s", c->reason);
    return;
  }
  if (rc < 0) {
    sup_note(c->sup, c, "%s", c->reason);
    after_failure(c, false);
    return;
  }
  set_state(c, STG_CS_STARTING);
  const stg_component_config_t *p = policy(c);
  if (!p->notify)
    timer_arm(c, TIMER_SETTLE, p->settle_ms);
  else if (p->ready_timeout_ms > 0)
    timer_arm(c, TIMER_READY_TIMEOUT, p->ready_timeout_ms);
}

static void begin_stop(stg_comp_t *c, stg_intent_t intent, int sig) {
  c->intent = intent;
  set_state(c, STG_CS_STOPPING);
  kill_group(c, sig);
  uint64_t t = policy(c)->stop_timeout_ms;
  if (sig == SIGKILL)
    t = t < 1000 ? t : 1000; /* only the exit is left to see */
  timer_arm(c, TIMER_STOP, t);
}

/* The process is gone and so is its group: finish the stop. */
static void stop_done(stg_comp_t *c) {
  timer_cancel(c);
  c->pgid = 0;
  c->group_lingers = false;
  write_children(c->sup);
  stg_intent_t intent = c->intent;
  c->intent = INTENT_NONE;
  switch (intent) {
  case INTENT_RESTART:
    after_failure(c, false);
    break;
  case INTENT_RESTART_NOW:
    c->consecutive = 0;
    c->rt_len = 0;
    do_start(c, true);
    break;
  default:
    set_state(c, STG_CS_STOPPED);
    break;
  }
}

void stg__super_dispatch(stg_comp_t *c, stg_cevent_t ev) {
  stg_super_t *sup = c->sup;
  const stg_component_config_t *p = policy(c);
  char how[128];
  switch (c->state) {
  case STG_CS_STOPPED:
  case STG_CS_FAILED:
  case STG_CS_MISSING:
    if (ev == EV_START || ev == EV_RESTART) {
      if (ev == EV_RESTART || c->state != STG_CS_STOPPED) {
        c->consecutive = 0;
        c->rt_len = 0;
      }
      c->reason[0] = '\0';
      do_start(c, true);
    } else if (ev == EV_STOP && c->state == STG_CS_MISSING) {
      set_state(c, STG_CS_STOPPED);
    }
    break;

  case STG_CS_STARTING:
  case STG_CS_READY:
    switch (ev) {
    case EV_READY:
      if (c->state == STG_CS_STARTING) {
        timer_cancel(c);
        c->ready_at = uv_now(sup->loop);
        set_state(c, STG_CS_READY);
        sup_note(sup, c, "ready in %llums",
                 (unsigned long long)(c->ready_at - c->started_at));
        if (c->watchdog_seen && p->watchdog_ms > 0)
          timer_arm(c, TIMER_WATCHDOG, p->watchdog_ms);
      }
      break;
    case EV_WATCHDOG:
      c->watchdog_seen = true;
      if (c->state == STG_CS_READY && p->watchdog_ms > 0)
        timer_arm(c, TIMER_WATCHDOG, p->watchdog_ms);
      break;
    case EV_EXIT: {
      bool stable = c->state == STG_CS_READY &&
                    uv_now(sup->loop) - c->ready_at >= p->min_uptime_ms;
      describe_exit(c, how, sizeof how);
      snprintf(c->reason, sizeof c->reason, "%s%s", how,
               c->state == STG_CS_STARTING ? " before it was ready" : "");
      sup_note(sup, c, "%s (pid %d)", c->reason, c->run ? c->run->pid : 0);
      timer_cancel(c);
      /* Whatever is left of its process group is an orphan now. */
      if (group_alive(c->pgid))
        kill(-(pid_t)c->pgid, SIGKILL);
      c->pgid = 0;
      c->run = NULL;
      after_failure(c, stable);
      /* A restart at once wrote the record with the new child already:
       * one file write less between an exit and its replacement. */
      if (c->pgid == 0)
        write_children(sup);
      break;
    }
    case EV_TIMER:
      if (c->timer_reason == TIMER_SETTLE) {
        c->timer_reason = TIMER_NONE;
        stg__super_dispatch(c, EV_READY);
        return; /* dispatch advanced already */
      }
      if (c->timer_reason == TIMER_READY_TIMEOUT) {
        char w[32];
        snprintf(c->reason, sizeof c->reason, "not ready within %s; killed",
                 stg_format_duration(p->ready_timeout_ms, w, sizeof w));
        sup_note(sup, c, "%s", c->reason);
        begin_stop(c, INTENT_RESTART, SIGKILL);
      } else if (c->timer_reason == TIMER_WATCHDOG) {
        char w[32];
        snprintf(c->reason, sizeof c->reason, "watchdog: no WATCHDOG=1 for %s; killed",
                 stg_format_duration(p->watchdog_ms, w, sizeof w));
        sup_note(sup, c, "%s", c->reason);
        begin_stop(c, INTENT_RESTART, SIGKILL);
      }
      break;
    case EV_STOP:
      sup_note(sup, c, "stopping (pid %d)", c->pgid);
      begin_stop(c, INTENT_STOP, SIGTERM);
      break;
    case EV_RESTART:
      sup_note(sup, c, "restarting on request (pid %d)", c->pgid);
      begin_stop(c, INTENT_RESTART_NOW, SIGTERM);
      break;
    default:
      break;
    }
    break;

  case STG_CS_BACKOFF:
    if (ev == EV_TIMER && c->timer_reason == TIMER_BACKOFF) {
      c->timer_reason = TIMER_NONE;
      do_start(c, false);
    } else if (ev == EV_STOP) {
      timer_cancel(c);
      set_state(c, STG_CS_STOPPED);
    } else if (ev == EV_RESTART || ev == EV_START) {
      c->consecutive = 0;
      do_start(c, true);
    }
    break;

  case STG_CS_FETCHING:
    /* agent-runner fetching (issue 4): fetch_done moves on from here. */
    if (ev == EV_STOP) {
      c->fetch_restart = false;
      if (c->fetch)
        stg_agentfetch_cancel(c->fetch);
      sup_note(sup, c, "fetch cancelled: stopping");
      set_state(c, STG_CS_STOPPED);
    } else if (ev == EV_RESTART || ev == EV_START) {
      /* Start over now (a fixed config, no backoff wait). */
      c->fetch_restart = true;
      if (c->fetch)
        stg_agentfetch_cancel(c->fetch);
    }
    break;

  case STG_CS_STOPPING:
    switch (ev) {
    case EV_EXIT:
      describe_exit(c, how, sizeof how);
      sup_note(sup, c, "stopped: %s", how);
      c->run = NULL;
      if (c->intent == INTENT_RESTART && c->reason[0] == '\0')
        snprintf(c->reason, sizeof c->reason, "%s", how);
      if (group_alive(c->pgid)) {
        /* Its group lives on (a grandchild ignoring SIGTERM): wait for the
         * stop timer, then SIGKILL the group; the reaper tells us when it
         * is empty. */
        c->group_lingers = true;
        break;
      }
      stop_done(c);
      break;
    case EV_GROUP_GONE:
      if (c->run == NULL && !group_alive(c->pgid))
        stop_done(c);
      break;
    case EV_TIMER:
      if (c->timer_reason == TIMER_STOP) {
        c->timer_reason = TIMER_NONE;
        if (c->run == NULL && !group_alive(c->pgid)) {
          stop_done(c);
          break;
        }
        sup_note(sup, c, "did not stop within the stop timeout; sending SIGKILL to "
                 "process group %d", c->pgid);
        kill_group(c, SIGKILL);
        /* Without a subreaper the group's end is not an event: look again
         * shortly. */
        timer_arm(c, TIMER_STOP, 100);
      }
      break;
    case EV_STOP:
      if (c->intent != INTENT_STOP)
        c->intent = INTENT_STOP;
      break;
    case EV_RESTART:
      if (c->intent == INTENT_STOP && sup->state != SUP_STOPPING)
        c->intent = INTENT_RESTART_NOW;
      break;
    default:
      break;
    }
    break;

  default:
    break;
  }
  stg__super_advance(sup);
}

/* --- the stack ------------------------------------------------------------------------ */

static bool has_process(const stg_comp_t *c) {
  /* A cancelled fetch counts until its done callback (issue 4). */
  return c->run != NULL || c->state == STG_CS_STOPPING || c->group_lingers ||
         c->fetch != NULL;
}

/* Settled: nothing is on its way anywhere. Every enabled component is
 * ready, failed, missing, or waiting to restart after a failed start; a
 * runner still stopped because the server is not ready counts too. */
static bool settled(stg_super_t *sup, bool fetch_ok) {
  const stg_comp_t *server = &sup->comp[STG_COMP_SERVER];
  bool server_blocks = sup->cfg->component[STG_COMP_SERVER].enabled &&
                       server->state != STG_CS_READY;
  for (int i = 0; i < STG_COMP_COUNT; i++) {
    const stg_comp_t *c = &sup->comp[i];
    if (!sup->cfg->component[i].enabled)
      continue;
    switch (c->state) {
    case STG_CS_READY:
    case STG_CS_FAILED:
    case STG_CS_MISSING:
    case STG_CS_BACKOFF:
      break;
    case STG_CS_STOPPED:
      if (i == STG_COMP_SERVER || !server_blocks)
        return false;
      break;
    case STG_CS_FETCHING:
      /* Settled only while waiting for a retry, like BACKOFF (issue 4);
       * for systemd's readiness a download in progress counts too: the
       * supervisor and the rest of the stack are up. */
      if (!fetch_ok && (c->fetch == NULL || !c->fetch->waiting))
        return false;
      break;
    default:
      return false;
    }
  }
  return true;
}

bool stg__super_settled(stg_super_t *sup) { return settled(sup, false); }

static void finish(stg_super_t *sup);

static void advance_once(stg_super_t *sup) {
  stg_comp_t *server = &sup->comp[STG_COMP_SERVER];
  if (sup->state == SUP_STOPPING || sup->restarting_all) {
    bool runners_busy = false;
    for (int i = 0; i < STG_COMP_COUNT; i++) {
      stg_comp_t *c = &sup->comp[i];
      if (i == STG_COMP_SERVER)
        continue;
      if (c->state == STG_CS_STARTING || c->state == STG_CS_READY ||
          c->state == STG_CS_BACKOFF || c->state == STG_CS_MISSING ||
          c->state == STG_CS_FETCHING)
        stg__super_dispatch(c, EV_STOP);
      if (has_process(c))
        runners_busy = true;
    }
    if (runners_busy)
      return;
    if (server->state == STG_CS_STARTING || server->state == STG_CS_READY ||
        server->state == STG_CS_BACKOFF)
      stg__super_dispatch(server, EV_STOP);
    if (has_process(server))
      return;
    if (sup->restarting_all) {
      sup->restarting_all = false;
      sup->state = SUP_STARTING;
      sup_note(sup, NULL, "restarting the stack");
      for (int i = 0; i < STG_COMP_COUNT; i++) {
        sup->comp[i].restarts = 0;
        sup->comp[i].rt_len = 0;
        sup->comp[i].consecutive = 0;
        if (sup->comp[i].state == STG_CS_FAILED || sup->comp[i].state == STG_CS_MISSING)
          set_state(&sup->comp[i], STG_CS_STOPPED);
      }
      if (sup->cfg->component[STG_COMP_SERVER].enabled)
        stg__super_dispatch(server, EV_START);
      sup->advance_again = true; /* the runners follow, as at start */
      return;
    }
    finish(sup);
    return;
  }
  /* Runners start once the server is ready (or when there is no server). */
  bool server_ok = server->state == STG_CS_READY ||
                   !sup->cfg->component[STG_COMP_SERVER].enabled;
  if (server_ok) {
    for (int i = 0; i < STG_COMP_COUNT; i++) {
      stg_comp_t *c = &sup->comp[i];
      if (i == STG_COMP_SERVER || !sup->cfg->component[i].enabled)
        continue;
      if (c->state == STG_CS_STOPPED)
        stg__super_dispatch(c, EV_START);
    }
  }
  if (!sup->settled_once && settled(sup, true)) {
    sup->settled_once = true;
    systemd_notify(sup, "READY=1");
  }
  if (stg__super_settled(sup)) {
    if (sup->state == SUP_STARTING) {
      sup->state = SUP_RUNNING;
      bool all_ready = true;
      for (int i = 0; i < STG_COMP_COUNT; i++)
        if (sup->cfg->component[i].enabled && sup->comp[i].state != STG_CS_READY)
          all_ready = false;
      sup_note(sup, NULL, "stack %s in %llums", all_ready ? "ready" : "settled with problems",
               (unsigned long long)(uv_now(sup->loop) - sup->started_at));
    }
    stg__ctl_settled(sup);
  } else if (stg__super_fetching(sup)) {
    stg__ctl_progress(sup); /* `daemon start` shows the download (issue 4) */
  }
  systemd_status(sup);
}

void stg__super_advance(stg_super_t *sup) {
  if (sup->advancing) {
    sup->advance_again = true;
    return;
  }
  sup->advancing = true;
  do {
    sup->advance_again = false;
    advance_once(sup);
  } while (sup->advance_again && !sup->closing);
  sup->advancing = false;
}

void stg__super_stop(stg_super_t *sup) {
  if (sup->state == SUP_STOPPING)
    return;
  sup_note(sup, NULL, "stopping the stack");
  systemd_notify(sup, "STOPPING=1");
  sup->state = SUP_STOPPING;
  stg__super_advance(sup);
}

int stg__super_restart(stg_super_t *sup, const char *component, char *err, size_t errlen) {
  if (sup->state == SUP_STOPPING) {
    snprintf(err, errlen, "the supervisor is stopping");
    return UV_ECANCELED;
  }
  if (component == NULL || strcmp(component, "all") == 0) {
    sup_note(sup, NULL, "restart of the stack requested");
    sup->restarting_all = true;
    stg__super_advance(sup);
    return 0;
  }
  int id = stg_component_lookup(component);
  if (id < 0) {
    snprintf(err, errlen, "unknown component '%s' (server, workflow-runner, agent-runner)",
             component);
    return UV_ENOENT;
  }
  if (!sup->cfg->component[id].enabled) {
    snprintf(err, errlen, "component '%s' is disabled in the configuration", component);
    return UV_EINVAL;
  }
  stg_comp_t *c = &sup->comp[id];
  if (c->state == STG_CS_STOPPED && id != STG_COMP_SERVER &&
      sup->comp[STG_COMP_SERVER].state != STG_CS_READY) {
    /* Waits for the server, as at start. */
    return 0;
  }
  sup->state = sup->state == SUP_RUNNING ? SUP_STARTING : sup->state;
  stg__super_dispatch(c, EV_RESTART);
  return 0;
}

/* --- status --------------------------------------------------------------------------- */

json_t *stg__super_status_json(stg_super_t *sup) {
  uint64_t now = uv_now(sup->loop);
  json_t *comps = json_array();
  for (int i = 0; i < STG_COMP_COUNT; i++) {
    stg_comp_t *c = &sup->comp[i];
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(c->name));
    json_object_set_new(o, "state", json_string(sup->cfg->component[i].enabled
                                                    ? stg_cstate_name(c->state)
                                                    : "disabled"));
    bool live = c->run != NULL && !c->run->exited;
    json_object_set_new(o, "pid", live ? json_integer(c->run->pid) : json_null());
    json_object_set_new(o, "uptime_ms",
                        live ? json_integer((json_int_t)(now - c->started_at)) : json_null());
    json_object_set_new(o, "restarts", json_integer(c->restarts));
    json_object_set_new(o, "ready", json_boolean(c->state == STG_CS_READY));
    json_t *le = json_object();
    if (c->has_exited) {
      char at[64];
      format_time(c->last_exit_wall_us, at, sizeof at);
      json_object_set_new(le, "code", c->last_signal ? json_null() : json_integer(c->last_code));
      json_object_set_new(le, "signal", c->last_signal ? json_integer(c->last_signal) : json_null());
      json_object_set_new(le, "at", json_string(at));
    } else {
      json_object_set_new(le, "code", json_null());
      json_object_set_new(le, "signal", json_null());
      json_object_set_new(le, "at", json_null());
    }
    json_object_set_new(o, "last_exit", le);
    json_object_set_new(o, "status_text",
                        c->status_text[0] ? json_string(c->status_text) : json_null());
    json_object_set_new(o, "next_restart_ms",
                        c->state == STG_CS_BACKOFF && c->backoff_until > now
                            ? json_integer((json_int_t)(c->backoff_until - now))
                            : (c->state == STG_CS_BACKOFF ? json_integer(0) : json_null()));
    json_object_set_new(o, "reason", c->reason[0] ? json_string(c->reason) : json_null());
    json_object_set_new(o, "program", c->program[0] ? json_string(c->program) : json_null());
    /* agent-runner fetching (issue 4): the download's progress. */
    if (c->fetch != NULL && c->state == STG_CS_FETCHING) {
      const stg_agentfetch_t *af = c->fetch;
      json_t *f = json_pack("{s:I, s:I, s:f, s:i, s:o, s:s, s:s}", "bytes",
                            (json_int_t)af->bytes, "total", (json_int_t)af->total, "rate",
                            af->rate, "attempts", (int)af->attempts, "last_error",
                            af->last_error[0] ? json_string(af->last_error) : json_null(),
                            "url", af->plan.url, "version", af->plan.version);
      json_object_set_new(f, "retry_in_ms",
                          af->waiting ? json_integer((json_int_t)(af->retry_at > now
                                                                      ? af->retry_at - now
                                                                      : 0))
                                      : json_null());
      json_object_set_new(o, "fetch", f);
    } else {
      json_object_set_new(o, "fetch", json_null());
    }
    json_array_append_new(comps, o);
  }
  static const char *const sst[] = {"starting", "running", "stopping"};
  bool ready = true;
  for (int i = 0; i < STG_COMP_COUNT; i++)
    if (sup->cfg->component[i].enabled && sup->comp[i].state != STG_CS_READY)
      ready = false;
  json_t *s = json_pack("{s:i, s:I, s:s, s:s, s:b, s:s}", "pid", (int)getpid(),
                        "uptime_ms", (json_int_t)(now - sup->started_at), "version",
                        stg_version(), "state", sst[sup->state], "ready", ready, "home",
                        sup->cfg->home);
  return json_pack("{s:b, s:o, s:o}", "ok", 1, "supervisor", s, "components", comps);
}

/* --- the notify socket ------------------------------------------------------------------ */

static stg_comp_t *comp_by_pid(stg_super_t *sup, int pid) {
  for (int i = 0; i < STG_COMP_COUNT; i++) {
    stg_comp_t *c = &sup->comp[i];
    if (c->run && !c->run->exited && c->run->pid == pid)
      return c;
  }
  return NULL;
}

static void handle_notify(stg_super_t *sup, int pid, char *msg) {
  stg_comp_t *c = comp_by_pid(sup, pid);
  if (c == NULL) {
    stg_debug("notify: ignoring a message from pid %d, not a child", pid);
    return;
  }
  char *save = NULL;
  for (char *line = strtok_r(msg, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    if (strcmp(line, "READY=1") == 0) {
      stg__super_dispatch(c, EV_READY);
    } else if (strncmp(line, "STATUS=", 7) == 0) {
      snprintf(c->status_text, sizeof c->status_text, "%s", line + 7);
    } else if (strcmp(line, "WATCHDOG=1") == 0) {
      stg__super_dispatch(c, EV_WATCHDOG);
    } else if (strcmp(line, "STOPPING=1") == 0) {
      stg_debug("%s: says it is stopping", c->name);
    }
    if (c->run == NULL || c->run->pid != pid)
      break; /* the dispatch replaced the process */
  }
}

static void on_notify(uv_poll_t *h, int status, int events) {
  stg_super_t *sup = container_of(h, stg_super_t, notify_poll);
  if (status < 0) {
    stg_warn("notify socket: %s", uv_strerror(status));
    return;
  }
  (void)events;
  for (;;) {
    char buf[4096];
    union {
      struct cmsghdr align;
      char b[CMSG_SPACE(sizeof(struct ucred))];
    } cbuf;
    struct iovec iov = {buf, sizeof buf - 1};
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.b;
    mh.msg_controllen = sizeof cbuf.b;
    ssize_t n = recvmsg(sup->notify_fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        stg_warn("notify socket: recvmsg: %s", strerror(errno));
      return;
    }
    buf[n] = '\0';
    int pid = -1;
#if defined(__linux__)
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
      if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS) {
        struct ucred uc;
        memcpy(&uc, CMSG_DATA(cm), sizeof uc);
        if (uc.uid == getuid())
          pid = uc.pid;
      }
    }
#endif
    if (pid <= 0) {
      stg_debug("notify: a message without credentials; ignored");
      continue;
    }
    handle_notify(sup, pid, buf);
  }
}

static int notify_listen(stg_super_t *sup) {
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (strlen(sup->notify_path) >= sizeof sa.sun_path) {
    stg_error("%s: path too long for a unix socket (%zu bytes, at most %zu): use a "
              "shorter STIGMER_HOME", sup->notify_path, strlen(sup->notify_path),
              sizeof sa.sun_path - 1);
    return UV_ENAMETOOLONG;
  }
  strcpy(sa.sun_path, sup->notify_path);
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -errno;
  unlink(sup->notify_path);
  mode_t old = umask(0077);
  int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
  umask(old);
  if (rc != 0) {
    rc = -errno;
    stg_error("bind %s: %s", sup->notify_path, strerror(errno));
    close(fd);
    return rc;
  }
#if defined(__linux__)
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
  /* Room for bursts of notifications. */
  int rcv = 256 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
#endif
  sup->notify_fd = fd;
  uv_poll_init(sup->loop, &sup->notify_poll, fd);
  uv_poll_start(&sup->notify_poll, UV_READABLE, on_notify);
  return 0;
}

/* --- signals and the reaper -------------------------------------------------------------- */

static bool is_direct_child(stg_super_t *sup, int pid) {
  for (stg_run_t *r = sup->runs; r; r = r->next)
    if (r->pid == pid && !r->exited)
      return true;
  return false;
}

/* Linux: as a child subreaper we inherit orphaned grandchildren. libuv
 * waits only for the pids it spawned, so these are reaped here, by pid,
 * never with waitpid(-1) (which would steal libuv's exit statuses). */
static void reap_orphans(stg_super_t *sup) {
#if defined(__linux__)
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
  FILE *f = fopen(path, "re");
  if (f == NULL)
    return;
  int pid;
  bool reaped = false;
  while (fscanf(f, "%d", &pid) == 1) {
    if (is_direct_child(sup, pid))
      continue;
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      stg_debug("reaped orphan pid %d", pid);
      reaped = true;
    }
  }
  fclose(f);
  if (reaped) {
    for (int i = 0; i < STG_COMP_COUNT; i++) {
      stg_comp_t *c = &sup->comp[i];
      if (c->state == STG_CS_STOPPING && c->group_lingers && !group_alive(c->pgid))
        stg__super_dispatch(c, EV_GROUP_GONE);
    }
  }
#else
#endif
}

static void on_signal(uv_signal_t *h, int signum) {
  stg_super_t *sup = h->data;
  switch (signum) {
  case SIGTERM:
  case SIGINT:
    stg_info("received %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    stg__super_stop(sup);
    break;
  case SIGHUP: {
    stg_info("received SIGHUP: reloading the configuration, reopening log files");
    if (sup->opts.reload) {
      stg_config_t *nc = calloc(1, sizeof *nc);
      char err[4608];
      if (nc && sup->opts.reload(nc, err, sizeof err, sup->opts.reload_data) == 0) {
        /* The listen address and home stay: changing them needs a restart. */
        stg_config_t *old = sup->cfg;
        sup->cfg = nc;
        stg_log_set_level(nc->log.level);
        stg_logstore_reconfigure(sup->logs, nc->logs.max_size, (unsigned)nc->logs.keep);
        stg_config_free(old);
        free(old);
        stg_info("configuration reloaded");
      } else {
        stg_error("reload failed, keeping the running configuration: %s",
                  nc ? err : "out of memory");
        if (nc) {
          stg_config_free(nc);
          free(nc);
        }
      }
    }
    stg_logstore_reopen(sup->logs);
    break;
  }
  case SIGCHLD:
    reap_orphans(sup);
    break;
  }
}

/* --- shutdown ------------------------------------------------------------------------------ */

static void maybe_done(stg_super_t *sup);

/* The close callback of the supervisor's own handles; close_handle points
 * their data at the supervisor (none of them uses data otherwise but the
 * signal watchers, whose data is the supervisor already). */
static void on_handle_closed(uv_handle_t *h) {
  stg_super_t *sup = h->data;
  sup->open_handles--;
  maybe_done(sup);
}

static void close_handle(stg_super_t *sup, uv_handle_t *h) {
  if (h->loop == NULL || uv_is_closing(h))
    return;
  sup->open_handles++;
  h->data = sup;
  uv_close(h, on_handle_closed);
}

static void logs_closed(void *arg) {
  stg_super_t *sup = arg;
  sup->logs = NULL;
  maybe_done(sup);
}

void stg__super_closed(stg_super_t *sup) { maybe_done(sup); }

static void maybe_done(stg_super_t *sup) {
  if (!sup->closing)
    return;
  if (sup->open_handles > 0 || sup->runs != NULL || sup->conns != NULL)
    return;
  for (int i = 0; i < STG_COMP_COUNT; i++)
    if (sup->comp[i].fetch != NULL)
      return; /* its done callback comes (issue 4) */
  if (sup->logs != NULL) {
    stg_logstore_t *l = sup->logs;
    stg_logstore_close(l, logs_closed, sup);
    return;
  }
  /* Everything is closed: the loop ends by itself. */
}

static void finish(stg_super_t *sup) {
  if (sup->closing)
    return;
  sup->closing = true;
  sup_note(sup, NULL, "stack stopped; supervisor exiting");
  if (sup->echo_sub) {
    stg_logsub_cancel(sup->echo_sub);
    sup->echo_sub = NULL;
  }
  unlink(sup->sock_path);
  unlink(sup->notify_path);
  unlink(sup->pid_path);
  unlink(sup->children_path);
  stg__ctl_close_all(sup);
  if (sup->ctl_listening)
    close_handle(sup, (uv_handle_t *)&sup->ctl);
  close_handle(sup, (uv_handle_t *)&sup->notify_poll);
  close_handle(sup, (uv_handle_t *)&sup->sig_term);
  close_handle(sup, (uv_handle_t *)&sup->sig_int);
  close_handle(sup, (uv_handle_t *)&sup->sig_hup);
  close_handle(sup, (uv_handle_t *)&sup->sig_chld);
  if (sup->log_timer_init)
    close_handle(sup, (uv_handle_t *)&sup->log_timer);
  for (int i = 0; i < STG_COMP_COUNT; i++)
    close_handle(sup, (uv_handle_t *)&sup->comp[i].timer);
  /* Pipes still held open by a process outside our groups are closed now. */
  for (stg_run_t *r = sup->runs; r; r = r->next) {
    r->comp = NULL;
    if (!uv_is_closing((uv_handle_t *)&r->out))
      uv_close((uv_handle_t *)&r->out, on_run_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&r->err))
      uv_close((uv_handle_t *)&r->err, on_run_handle_closed);
  }
  maybe_done(sup);
}

/* --- echo (daemon run) ------------------------------------------------------------------------ */

static int echo_deliver(void *user, const char *line, size_t len, bool must) {
  (void)must;
  stg_super_t *sup = user;
  json_error_t jerr;
  json_t *j = json_loadb(line, len, 0, &jerr);
  if (j == NULL)
    return 0;
  const char *comp = json_string_value(json_object_get(j, "component"));
  const char *text = json_string_value(json_object_get(j, "line"));
  const char *stream = json_string_value(json_object_get(j, "stream"));
  if (stream && strcmp(stream, "sys") == 0) {
    json_decref(j); /* the supervisor's own notes are on stderr already */
    return 0;
  }
  json_int_t gap = json_integer_value(json_object_get(j, "gap"));
  if (comp && (text || gap)) {
    static const char *const colors[] = {"\033[36m", "\033[33m", "\033[35m", "\033[32m"};
    int idx = stg_component_lookup(comp);
    const char *col = colors[idx < 0 ? 3 : idx];
    char gapmsg[64];
    if (!text) {
      snprintf(gapmsg, sizeof gapmsg, "[%lld lines not shown]", (long long)gap);
      text = gapmsg;
    }
    if (sup->opts.color)
      fprintf(stderr, "%s%-15s |\033[0m %s\n", col, comp, text);
    else
      fprintf(stderr, "%-15s | %s\n", comp, text);
  }
  json_decref(j);
  return 0;
}

/* --- run --------------------------------------------------------------------------------------- */

static int setup_files(stg_super_t *sup) {
  const stg_config_t *cfg = sup->cfg;
  int rc = make_dir(cfg->home, 0700, false);
  if (rc < 0) {
    stg_error("mkdir %s: %s", cfg->home, uv_strerror(rc));
    return rc;
  }
  snprintf(sup->run_dir, sizeof sup->run_dir, "%s/run", cfg->home);
  rc = make_dir(sup->run_dir, 0700, true);
  if (rc < 0) {
    stg_error("mkdir %s: %s", sup->run_dir, uv_strerror(rc));
    return rc;
  }
  char logs[4200];
  snprintf(logs, sizeof logs, "%s/logs", cfg->home);
  rc = make_dir(logs, 0755, false);
  if (rc < 0) {
    stg_error("mkdir %s: %s", logs, uv_strerror(rc));
    return rc;
  }
  snprintf(sup->sock_path, sizeof sup->sock_path, "%s/supervisor.sock", sup->run_dir);
  snprintf(sup->notify_path, sizeof sup->notify_path, "%s/notify.sock", sup->run_dir);
  snprintf(sup->pid_path, sizeof sup->pid_path, "%s/supervisor.pid", sup->run_dir);
  snprintf(sup->children_path, sizeof sup->children_path, "%s/children.json", sup->run_dir);
  return 0;
}

static void server_addr_for_clients(stg_super_t *sup) {
  const char *l = sup->cfg->server.listen;
  if (strncmp(l, "0.0.0.0:", 8) == 0)
    snprintf(sup->env_server_addr, sizeof sup->env_server_addr, "127.0.0.1:%s", l + 8);
  else if (strncmp(l, "[::]:", 5) == 0)
    snprintf(sup->env_server_addr, sizeof sup->env_server_addr, "[::1]:%s", l + 5);
  else
    snprintf(sup->env_server_addr, sizeof sup->env_server_addr, "%s", l);
}

int stg_super_run(uv_loop_t *loop, const stg_super_options_t *o) {
  stg_super_t *sup = calloc(1, sizeof *sup);
  if (sup == NULL)
    return 1;
  sup->loop = loop;
  sup->cfg = o->cfg;
  sup->opts = *o;
  sup->lock_fd = -1;
  sup->notify_fd = -1;
  sup->started_at = uv_now(loop);
  int exit_code = 1;
  srand((unsigned)(wall_us() ^ (uint64_t)getpid()));

  /* Our own NOTIFY_SOCKET (systemd) is for us, not for the children. */
  const char *ns = getenv("NOTIFY_SOCKET");
  if (ns && *ns)
    sup->systemd_notify = strdup(ns);
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  unsetenv("WATCHDOG_PID");
  signal(SIGPIPE, SIG_IGN);

  if (setup_files(sup) != 0)
    goto out;
  int lrc = take_lock(sup);
  if (lrc != 0)
    goto out;
  char pidbuf[32];
  int pl = snprintf(pidbuf, sizeof pidbuf, "%d\n", (int)getpid());
  int rc = write_atomic(sup->pid_path, pidbuf, (size_t)pl);
  if (rc < 0) {
    stg_error("write %s: %s", sup->pid_path, uv_strerror(rc));
    goto out;
  }
  kill_leftovers(sup);
#if defined(__linux__)
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
    stg_warn("prctl(PR_SET_CHILD_SUBREAPER): %s", strerror(errno));
#endif
  server_addr_for_clients(sup);

  char logdir[4200];
  snprintf(logdir, sizeof logdir, "%s/logs", sup->cfg->home);
  stg_logstore_options_t lo;
  memset(&lo, 0, sizeof lo);
  lo.dir = logdir;
  lo.max_size = sup->cfg->logs.max_size;
  lo.keep = (unsigned)sup->cfg->logs.keep;
  rc = stg_logstore_init(loop, &lo, &sup->logs);
  if (rc < 0) {
    stg_error("logs in %s: %s", logdir, uv_strerror(rc));
    goto out;
  }
  stg_logstore_on_room(sup->logs, on_log_room, sup);
  uv_timer_init(loop, &sup->log_timer);
  sup->log_timer_init = true;
  for (int i = 0; i < STG_COMP_COUNT; i++) {
    stg_comp_t *c = &sup->comp[i];
    c->sup = sup;
    c->id = (stg_component_id_t)i;
    c->name = stg_component_name((stg_component_id_t)i);
    c->state = STG_CS_STOPPED;
    uv_timer_init(loop, &c->timer);
    rc = stg_logstore_source(sup->logs, c->name, &c->log);
    if (rc < 0) {
      stg_error("log for %s: %s", c->name, uv_strerror(rc));
      goto out_close;
    }
  }
  if (notify_listen(sup) != 0)
    goto out_close;
  uv_signal_init(loop, &sup->sig_term);
  uv_signal_init(loop, &sup->sig_int);
  uv_signal_init(loop, &sup->sig_hup);
  uv_signal_init(loop, &sup->sig_chld);
  sup->sig_term.data = sup->sig_int.data = sup->sig_hup.data = sup->sig_chld.data = sup;
  uv_signal_start(&sup->sig_term, on_signal, SIGTERM);
  uv_signal_start(&sup->sig_int, on_signal, SIGINT);
  uv_signal_start(&sup->sig_hup, on_signal, SIGHUP);
  uv_signal_start(&sup->sig_chld, on_signal, SIGCHLD);
  if (stg__ctl_listen(sup) != 0)
    goto out_close;
  if (o->echo) {
    stg_logsub_options_t so;
    memset(&so, 0, sizeof so);
    so.tail = 0;
    so.follow = true;
    so.deliver = echo_deliver;
    so.arg = sup;
    stg_logstore_subscribe(sup->logs, &so, &sup->echo_sub);
  }
  if (o->ready_fd >= 0) {
    ssize_t w = write(o->ready_fd, "ok\n", 3);
    (void)w;
    close(o->ready_fd);
  }
  stg_info("supervisor %s (pid %d) for %s", stg_version(), (int)getpid(), sup->cfg->home);
  sup->state = SUP_STARTING;
  if (sup->cfg->component[STG_COMP_SERVER].enabled)
    stg__super_dispatch(&sup->comp[STG_COMP_SERVER], EV_START);
  else
    stg__super_advance(sup);
  uv_run(loop, UV_RUN_DEFAULT);
  exit_code = 0;
  goto out;

out_close:
  /* Setup failed after handles were made: close them properly. */
  sup->state = SUP_STOPPING;
  finish(sup);
  uv_run(loop, UV_RUN_DEFAULT);
out:
  if (sup->lock_fd >= 0) {
    if (exit_code == 0 || sup->closing) {
      unlink(sup->pid_path);
    }
    close(sup->lock_fd);
  }
  if (o->ready_fd >= 0 && exit_code != 0)
    close(o->ready_fd);
  for (int i = 0; i < STG_COMP_COUNT; i++)
    free(sup->comp[i].restart_times);
  free(sup->systemd_notify);
  stg_config_free(sup->cfg);
  free(sup->cfg);
  free(sup);
  return exit_code;
}
