/* agent-runner: the reference agent-runner program.
 *
 * The supervisor runs this as the stack's third component. What it does:
 *
 *   - reads STIGMER_SERVER_ADDR (host:port, default 127.0.0.1:7234) and
 *     STIGMER_LOG_LEVEL; logs the provider settings it was given;
 *   - waits for the server: GET /healthz over plain HTTP/1.1, retried with
 *     exponential backoff (100 ms doubling to 5 s) until the status is 2xx;
 *   - then sends READY=1 over $NOTIFY_SOCKET;
 *   - sends WATCHDOG=1 every half of $WATCHDOG_USEC (none when unset);
 *   - exits 0 on SIGTERM or SIGINT, and when its parent (the supervisor) dies
 *     (Linux: PR_SET_PDEATHSIG; elsewhere a getppid() check).
 *
 * It runs no agent tasks: that is later work. Every event is one line on
 * stderr in the stg_log format. See docs/agent-runner.md.
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

#include <uv.h>

#include "log.h"
#include "notify.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

enum {
  BACKOFF_INITIAL_MS = 100,  /* first retry delay of the health check */
  BACKOFF_MAX_MS = 5000,     /* retry delay cap */
  ATTEMPT_TIMEOUT_MS = 5000, /* connect + request + status line */
  STATUS_LINE_MAX = 1024,    /* bytes read looking for the status line */
  PPID_POLL_MS = 1000        /* non-Linux: how often the parent is checked */
};

typedef struct {
  uv_loop_t *loop;
  uv_signal_t sig_term;    /* SIGTERM: exit 0 */
  uv_signal_t sig_int;     /* SIGINT: exit 0 */
  uv_signal_t sig_hup;     /* the parent-death signal (and a plain SIGHUP) */
  uv_timer_t retry;        /* backoff between health-check attempts */
  uv_timer_t deadline;     /* one attempt's timeout */
  uv_timer_t watchdog;     /* WATCHDOG=1 pings */
  uv_timer_t ppid_check;   /* non-Linux parent check */
  uv_getaddrinfo_t gai;    /* resolving the server's host */
  struct addrinfo *ai;     /* its addresses, during an attempt */
  struct addrinfo *cur;    /* the one being tried */
  uv_tcp_t tcp;            /* the health-check connection */
  uv_connect_t connect;
  uv_write_t write;
  char host[256];          /* the server's host, without brackets */
  char port[16];           /* its port */
  char req[512];           /* the request bytes */
  char buf[STATUS_LINE_MAX];
  size_t len;              /* bytes in buf */
  unsigned attempt;        /* health-check attempts so far */
  uint64_t backoff_ms;     /* the next retry delay */
  uint64_t watchdog_ms;    /* ping interval, 0 for none */
  bool resolving;          /* gai in flight */
  bool tcp_open;           /* tcp initialised and not yet closed */
  bool next_addr;          /* once tcp is closed, try r->cur (the next address) */
  bool attempt_over;       /* this attempt's outcome was reported */
  bool ready;              /* READY=1 sent */
  bool stopping;
  pid_t ppid;              /* the parent when we started */
} runner_t;

static void attempt_start(runner_t *r);

/* --- stopping ------------------------------------------------------------------- */

static void close_one(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

static void stop(runner_t *r, const char *why) {
  if (r->stopping)
    return;
  r->stopping = true;
  stg_info("%s: exiting", why);
  int rc = stg_notify("STOPPING=1");
  if (rc < 0)
    stg_warn("notify STOPPING=1: %s", uv_strerror(rc));
  if (r->resolving)
    uv_cancel((uv_req_t *)&r->gai);
  /* Closing the tcp handle cancels its connect and write requests. */
  uv_walk(r->loop, close_one, NULL);
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

/* --- watchdog ------------------------------------------------------------------- */

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  int rc = stg_notify("WATCHDOG=1");
  if (rc < 0)
    stg_warn("notify WATCHDOG=1: %s", uv_strerror(rc));
  else
    stg_debug("sent WATCHDOG=1");
}

/* --- the health check ----------------------------------------------------------- */

static void on_retry(uv_timer_t *t) {
  runner_t *r = container_of(t, runner_t, retry);
  attempt_start(r);
}

static void schedule_retry(runner_t *r) {
  if (r->stopping)
    return;
  uint64_t d = r->backoff_ms;
  r->backoff_ms = d * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : d * 2;
  uv_timer_start(&r->retry, on_retry, d, 0);
}

static void connect_cur(runner_t *r);

static void on_tcp_closed(uv_handle_t *h) {
  runner_t *r = container_of((uv_tcp_t *)h, runner_t, tcp);
  r->tcp_open = false;
  if (r->next_addr && !r->attempt_over && !r->stopping) {
    r->next_addr = false;
    connect_cur(r);
    return;
  }
  r->next_addr = false;
  if (!r->ready)
    schedule_retry(r);
}

static void free_addrs(runner_t *r) {
  if (r->ai != NULL)
    uv_freeaddrinfo(r->ai);
  r->ai = r->cur = NULL;
}

static void become_ready(runner_t *r) {
  r->ready = true;
  stg_info("server %s:%s is healthy (attempt %u)", r->host, r->port, r->attempt);
  int rc = stg_notify("READY=1");
  if (rc < 0)
    stg_warn("notify READY=1: %s", uv_strerror(rc));
  else if (getenv("NOTIFY_SOCKET") != NULL)
    stg_info("sent READY=1");
  stg_info("ready; this reference agent-runner runs no agent tasks, waiting for SIGTERM");
}

/* The attempt ended: ok, or failed for the reason given (logged). The tcp
 * handle, if open, is closed; its close callback schedules the retry. */
static void attempt_end(runner_t *r, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void attempt_end(runner_t *r, bool ok, const char *fmt, ...) {
  if (r->attempt_over || r->stopping)
    return;
  r->attempt_over = true;
  uv_timer_stop(&r->deadline);
  free_addrs(r);
  if (ok) {
    become_ready(r);
  } else {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    stg_info("waiting for server: GET http://%s:%s/healthz (attempt %u): %s; retry in %llu ms",
             r->host, r->port, r->attempt, msg, (unsigned long long)r->backoff_ms);
  }
  if (r->tcp_open) {
    if (!uv_is_closing((uv_handle_t *)&r->tcp))
      uv_close((uv_handle_t *)&r->tcp, on_tcp_closed);
  } else if (r->resolving) {
    uv_cancel((uv_req_t *)&r->gai); /* on_resolved schedules the retry */
  } else if (!ok) {
    schedule_retry(r);
  }
}

static void on_deadline(uv_timer_t *t) {
  runner_t *r = container_of(t, runner_t, deadline);
  attempt_end(r, false, "no answer within %d ms", ATTEMPT_TIMEOUT_MS);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  runner_t *r = container_of((uv_tcp_t *)h, runner_t, tcp);
  buf->base = r->buf + r->len;
  buf->len = sizeof r->buf - 1 - r->len;
}

/* Looks at the bytes so far: 1 when the status line is complete and 2xx, 0
 * when more is needed, -1 when it is complete and not 2xx (msg says why). */
static int check_status(runner_t *r, char *msg, size_t msglen) {
  r->buf[r->len] = '\0';
  char *eol = strstr(r->buf, "\r\n");
  if (eol == NULL)
    eol = strchr(r->buf, '\n');
  if (eol == NULL) {
    if (r->len >= sizeof r->buf - 1) {
      snprintf(msg, msglen, "no status line in the first %zu bytes", r->len);
      return -1;
    }
    return 0;
  }
  *eol = '\0';
  int code = 0;
  if (strncmp(r->buf, "HTTP/1.", 7) != 0 || sscanf(r->buf + 8, " %3d", &code) != 1) {
    snprintf(msg, msglen, "not an HTTP/1 status line: '%.80s'", r->buf);
    return -1;
  }
  if (code < 200 || code > 299) {
    snprintf(msg, msglen, "status '%.80s'", r->buf + 9);
    return -1;
  }
  return 1;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  runner_t *r = container_of((uv_tcp_t *)s, runner_t, tcp);
  if (n == 0)
    return;
  if (n < 0) {
    if (n == UV_EOF)
      attempt_end(r, false, "connection closed before a status line");
    else
      attempt_end(r, false, "read: %s", uv_strerror((int)n));
    return;
  }
  r->len += (size_t)n;
  char msg[160];
  int st = check_status(r, msg, sizeof msg);
  if (st > 0)
    attempt_end(r, true, "ok");
  else if (st < 0)
    attempt_end(r, false, "%s", msg);
}

static void on_write(uv_write_t *w, int status) {
  runner_t *r = container_of(w, runner_t, write);
  if (status == UV_ECANCELED)
    return;
  if (status < 0)
    attempt_end(r, false, "send request: %s", uv_strerror(status));
}

static void on_connect(uv_connect_t *c, int status) {
  runner_t *r = container_of(c, runner_t, connect);
  if (status == UV_ECANCELED)
    return;
  if (status < 0) {
    if (r->cur != NULL && r->cur->ai_next != NULL) {
      /* Another address of the host, e.g. 127.0.0.1 after ::1. */
      stg_debug("connect %s:%s: %s; trying its next address", r->host, r->port,
                uv_strerror(status));
      r->cur = r->cur->ai_next;
      r->next_addr = true;
      uv_close((uv_handle_t *)&r->tcp, on_tcp_closed);
      return;
    }
    attempt_end(r, false, "connect: %s", uv_strerror(status));
    return;
  }
  int rc = uv_read_start((uv_stream_t *)&r->tcp, on_alloc, on_read);
  if (rc == 0) {
    uv_buf_t b = uv_buf_init(r->req, (unsigned)strlen(r->req));
    rc = uv_write(&r->write, (uv_stream_t *)&r->tcp, &b, 1, on_write);
  }
  if (rc < 0)
    attempt_end(r, false, "send request: %s", uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *ai) {
  runner_t *r = container_of(g, runner_t, gai);
  r->resolving = false;
  if (r->stopping) {
    uv_freeaddrinfo(ai);
    return;
  }
  if (r->attempt_over) { /* timed out while resolving */
    uv_freeaddrinfo(ai);
    schedule_retry(r);
    return;
  }
  if (status < 0) {
    attempt_end(r, false, "resolve %s: %s", r->host, uv_strerror(status));
    return;
  }
  r->ai = r->cur = ai;
  connect_cur(r);
}

static void connect_cur(runner_t *r) {
  int rc = uv_tcp_init(r->loop, &r->tcp);
  if (rc == 0) {
    r->tcp_open = true;
    rc = uv_tcp_connect(&r->connect, &r->tcp, r->cur->ai_addr, on_connect);
  }
  if (rc < 0)
    attempt_end(r, false, "connect: %s", uv_strerror(rc));
}

static void attempt_start(runner_t *r) {
  if (r->stopping)
    return;
  r->attempt++;
  r->attempt_over = false;
  r->len = 0;
  uv_timer_start(&r->deadline, on_deadline, ATTEMPT_TIMEOUT_MS, 0);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  int rc = uv_getaddrinfo(r->loop, &r->gai, on_resolved, r->host, r->port, &hints);
  if (rc < 0) {
    attempt_end(r, false, "resolve %s: %s", r->host, uv_strerror(rc));
    return;
  }
  r->resolving = true;
}

/* --- setup ---------------------------------------------------------------------- */

/* "host:port", "[v6]:port", optionally after "http://". 0 or UV_EINVAL. */
static int parse_addr(runner_t *r, const char *addr) {
  if (strncmp(addr, "http://", 7) == 0)
    addr += 7;
  const char *colon;
  const char *host = addr;
  size_t hl;
  if (addr[0] == '[') {
    const char *close = strchr(addr, ']');
    if (close == NULL || close[1] != ':')
      return UV_EINVAL;
    host = addr + 1;
    hl = (size_t)(close - host);
    colon = close + 1;
  } else {
    colon = strrchr(addr, ':');
    if (colon == NULL)
      return UV_EINVAL;
    hl = (size_t)(colon - addr);
  }
  const char *port = colon + 1;
  size_t pl = strcspn(port, "/");
  if (hl == 0 || hl >= sizeof r->host || pl == 0 || pl >= sizeof r->port ||
      strspn(port, "0123456789") != pl)
    return UV_EINVAL;
  long p = strtol(port, NULL, 10);
  if (p < 1 || p > 65535)
    return UV_EINVAL;
  memcpy(r->host, host, hl);
  r->host[hl] = '\0';
  memcpy(r->port, port, pl);
  r->port[pl] = '\0';
  bool v6 = strchr(r->host, ':') != NULL;
  snprintf(r->req, sizeof r->req,
           "GET /healthz HTTP/1.1\r\nHost: %s%s%s:%s\r\nUser-Agent: stigmer-agent-runner\r\n"
           "Connection: close\r\n\r\n",
           v6 ? "[" : "", r->host, v6 ? "]" : "", r->port);
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
             "$NOTIFY_SOCKET, pings WATCHDOG=1 every half of $WATCHDOG_USEC, and\n"
             "exits 0 on SIGTERM or when its parent dies. It runs no agent tasks.\n"
             "\n"
             "Environment: STIGMER_SERVER_ADDR (host:port, default 127.0.0.1:7234),\n"
             "STIGMER_LOG_LEVEL, NOTIFY_SOCKET, WATCHDOG_USEC, STIGMER_SUPERVISOR_PID.\n"
             "Exit status: 0 stopped by a signal or parent exit, 2 bad environment,\n"
             "1 other failure.\n");
      return 0;
    }
    fprintf(stderr, "agent-runner: unknown argument '%s' (try --help)\n", argv[i]);
    return 2;
  }

  const char *addr = getenv("STIGMER_SERVER_ADDR");
  if (addr == NULL || *addr == '\0')
    addr = "127.0.0.1:7234";
  if (parse_addr(&r, addr) != 0) {
    stg_error("STIGMER_SERVER_ADDR: expected host:port, got '%s'", addr);
    return 2;
  }

  r.loop = uv_default_loop();
  r.backoff_ms = BACKOFF_INITIAL_MS;
  uv_signal_init(r.loop, &r.sig_term);
  uv_signal_init(r.loop, &r.sig_int);
  uv_signal_init(r.loop, &r.sig_hup);
  r.sig_term.data = r.sig_int.data = r.sig_hup.data = &r;
  uv_timer_init(r.loop, &r.retry);
  uv_timer_init(r.loop, &r.deadline);
  uv_timer_init(r.loop, &r.watchdog);
  uv_timer_init(r.loop, &r.ppid_check);
  int rc = uv_signal_start(&r.sig_term, on_signal, SIGTERM);
  if (rc == 0)
    rc = uv_signal_start(&r.sig_int, on_signal, SIGINT);
  if (rc == 0)
    rc = uv_signal_start(&r.sig_hup, on_signal, SIGHUP);
  if (rc != 0) {
    stg_error("install signal handlers: %s", uv_strerror(rc));
    return 1;
  }

  stg_info("starting (pid %ld, parent %ld); server %s:%s", (long)getpid(), (long)r.ppid,
           r.host, r.port);
  const char *prov = getenv("STIGMER_AGENT_RUNNER_PROVIDER");
  const char *model = getenv("STIGMER_AGENT_RUNNER_MODEL");
  const char *base = getenv("STIGMER_AGENT_RUNNER_BASE_URL");
  if (prov || model || base)
    stg_info("provider %s, model %s, base_url %s", prov ? prov : "(default)",
             model ? model : "(default)", base && *base ? base : "(default)");

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

  attempt_start(&r);
  uv_run(r.loop, UV_RUN_DEFAULT);
  free_addrs(&r);
  rc = uv_loop_close(r.loop);
  if (rc != 0) {
    stg_error("close the loop: %s", uv_strerror(rc));
    return 1;
  }
  return 0;
}
