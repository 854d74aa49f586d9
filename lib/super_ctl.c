/* The control socket: newline-delimited JSON requests from the CLI.
 * Protocol: docs/internals/control.md. */
#include "super-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctlproto.h"
#include "log.h"

#define MAX_REQUEST STG_CTL_MAX_LINE     /* a longer line is refused */
#define MAX_QUEUED (8u * 1024u * 1024u)  /* per-subscriber write queue cap */
#define LOW_QUEUED (MAX_QUEUED / 2)      /* a subscriber behind resumes below this */
#define BATCH (256u * 1024u)             /* log lines gathered into one write */

struct stg_ctl_conn_s {
  stg_super_t *sup;
  uv_pipe_t pipe;
  uv_timer_t timer;      /* the timeout of a `wait` */
  int open_handles;
  bool closing;
  bool shutting_down;    /* a final reply is being flushed */
  bool waiting;          /* a `wait` request is pending */
  bool progress;         /* ... and answers when a fetch transfers (issue 4) */
  bool logs_follow;
  stg_logsub_t *sub;
  uv_prepare_t flush;    /* writes the gathered log lines, once per loop turn */
  struct write_s *batch; /* log lines gathered, not yet given to uv_write */
  char *buf;
  size_t len;
  stg_ctl_conn_t *next;
};

typedef struct write_s {
  uv_write_t req;
  uv_buf_t buf;
  size_t len, cap; /* of data, while log lines are gathered */
  char data[];
} write_t;

static void conn_close(stg_ctl_conn_t *c);

/* Bytes of this connection not yet written to the socket. */
static size_t queued(stg_ctl_conn_t *c) {
  return uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe) +
         (c->batch ? c->batch->len : 0);
}

static void on_write(uv_write_t *req, int status) {
  write_t *w = container_of(req, write_t, req);
  stg_ctl_conn_t *c = req->handle->data;
  free(w);
  if (c->closing)
    return;
  if (status < 0) { /* the client is gone (EPIPE): a follower would never read */
    conn_close(c);
    return;
  }
  /* A log subscriber that fell behind is caught up as the queue drains. */
  if (c->sub && !c->shutting_down && queued(c) <= LOW_QUEUED)
    stg_logsub_resume(c->sub);
}

/* Gives the gathered log lines to uv_write: one write for many lines. */
static void batch_flush(stg_ctl_conn_t *c) {
  write_t *w = c->batch;
  if (w == NULL)
    return;
  c->batch = NULL;
  uv_prepare_stop(&c->flush);
  w->buf = uv_buf_init(w->data, (unsigned)w->len);
  if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &w->buf, 1, on_write) < 0)
    free(w);
}

static void on_flush(uv_prepare_t *p) {
  batch_flush(container_of(p, stg_ctl_conn_t, flush));
}

/* Adds a log line to the batch, written before the loop next waits. */
static int batch_add(stg_ctl_conn_t *c, const char *line, size_t len) {
  if (c->batch && c->batch->len + len > BATCH)
    batch_flush(c);
  write_t *w = c->batch;
  if (w == NULL || w->len + len > w->cap) {
    size_t cap = w ? w->cap : 4096;
    while (cap < (w ? w->len : 0) + len)
      cap *= 2;
    write_t *nw = realloc(w, sizeof *w + cap);
    if (nw == NULL)
      return UV_ENOMEM;
    if (w == NULL) {
      nw->len = 0;
      uv_prepare_start(&c->flush, on_flush);
    }
    nw->cap = cap;
    c->batch = w = nw;
  }
  memcpy(w->data + w->len, line, len);
  w->len += len;
  return 0;
}

/* Queue raw bytes (one or more whole lines). */
static int conn_write(stg_ctl_conn_t *c, const char *data, size_t len) {
  if (c->closing)
    return UV_ECANCELED;
  batch_flush(c);
  write_t *w = malloc(sizeof *w + len);
  if (w == NULL)
    return UV_ENOMEM;
  memcpy(w->data, data, len);
  w->buf = uv_buf_init(w->data, (unsigned)len);
  int rc = uv_write(&w->req, (uv_stream_t *)&c->pipe, &w->buf, 1, on_write);
  if (rc < 0)
    free(w);
  return rc;
}

static void send_json(stg_ctl_conn_t *c, json_t *j) {
  char *s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (s == NULL)
    return;
  size_t n = strlen(s);
  char *line = realloc(s, n + 2);
  if (line == NULL) {
    free(s);
    return;
  }
  line[n] = '\n';
  line[n + 1] = '\0';
  conn_write(c, line, n + 1);
  free(line);
}

static void on_handle_closed(uv_handle_t *h) {
  stg_ctl_conn_t *c = h->data;
  if (--c->open_handles > 0)
    return;
  stg_super_t *sup = c->sup;
  for (stg_ctl_conn_t **pp = &sup->conns; *pp; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  }
  free(c->buf);
  free(c);
  stg__super_closed(sup);
}

static void conn_close(stg_ctl_conn_t *c) {
  if (c->closing)
    return;
  c->closing = true;
  if (c->sub) {
    stg_logsub_cancel(c->sub);
    c->sub = NULL;
  }
  free(c->batch);
  c->batch = NULL;
  uv_close((uv_handle_t *)&c->flush, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  uv_close((uv_handle_t *)&c->pipe, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  stg_ctl_conn_t *c = req->data;
  (void)status;
  free(req);
  conn_close(c);
}

/* Close once what was queued has been written. */
static void conn_finish(stg_ctl_conn_t *c) {
  if (c->closing || c->shutting_down)
    return;
  c->shutting_down = true;
  batch_flush(c);
  uv_read_stop((uv_stream_t *)&c->pipe);
  uv_shutdown_t *req = malloc(sizeof *req);
  if (req == NULL || uv_shutdown(req, (uv_stream_t *)&c->pipe, on_shutdown) != 0) {
    free(req);
    conn_close(c);
    return;
  }
  req->data = c;
}

static void send_error(stg_ctl_conn_t *c, const char *code, const char *msg, bool fatal) {
  send_json(c, json_pack("{s:b, s:{s:s, s:s}}", "ok", 0, "error", "code", code,
                         "message", msg));
  if (fatal)
    conn_finish(c);
}

/* --- requests ---------------------------------------------------------------------- */

static void on_wait_timeout(uv_timer_t *t) {
  stg_ctl_conn_t *c = container_of(t, stg_ctl_conn_t, timer);
  if (!c->waiting)
    return;
  c->waiting = false;
  json_t *st = stg__super_status_json(c->sup);
  json_object_set_new(st, "timeout", json_true());
  send_json(c, st);
}

/* A `wait` with "progress": true also ends while a download transfers, so
 * `daemon start` can show it (issue 4: agent-runner fetching). */
void stg__ctl_progress(stg_super_t *sup) {
  for (stg_ctl_conn_t *c = sup->conns; c; c = c->next) {
    if (!c->waiting || !c->progress || c->closing)
      continue;
    c->waiting = false;
    uv_timer_stop(&c->timer);
    send_json(c, stg__super_status_json(sup));
  }
}

void stg__ctl_settled(stg_super_t *sup) {
  for (stg_ctl_conn_t *c = sup->conns; c; c = c->next) {
    if (!c->waiting || c->closing)
      continue;
    c->waiting = false;
    uv_timer_stop(&c->timer);
    send_json(c, stg__super_status_json(sup));
  }
}

static int log_deliver(void *user, const char *line, size_t len, bool must) {
  stg_ctl_conn_t *c = user;
  if (c->closing || c->shutting_down)
    return UV_ECANCELED;
  if (!must && queued(c) > MAX_QUEUED)
    return UV_ENOBUFS;
  int rc = batch_add(c, line, len);
  if (rc == 0 && !c->logs_follow && len >= 6 && strncmp(line, "{\"end\"", 6) == 0)
    conn_finish(c);
  return rc < 0 ? rc : 0;
}

static void do_logs(stg_ctl_conn_t *c, const stg_ctl_request_t *r) {
  stg_logsub_options_t so;
  memset(&so, 0, sizeof so);
  so.tail = r->tail;
  so.follow = r->follow;
  const char *names[STG_CTL_MAX_COMPONENTS];
  for (unsigned i = 0; i < r->n_components; i++)
    names[i] = r->components[i];
  so.components = r->n_components ? names : NULL;
  so.n_components = r->n_components;
  so.deliver = log_deliver;
  so.arg = c;
  c->logs_follow = so.follow;
  uv_read_stop((uv_stream_t *)&c->pipe); /* one request per logs connection */
  int rc = stg_logstore_subscribe(c->sup->logs, &so, &c->sub);
  if (rc < 0)
    send_error(c, "internal", uv_strerror(rc), true);
}

static void handle_request(stg_ctl_conn_t *c, const char *line, size_t len) {
  stg_super_t *sup = c->sup;
  stg_ctl_request_t r;
  const char *code = NULL;
  char err[400];
  if (stg_ctlproto_parse(line, len, &r, &code, err, sizeof err) != 0) {
    /* A bad restart target is an answer, not a broken connection. */
    send_error(c, code, err, strcmp(code, "unknown_component") != 0 || r.cmd != STG_CTL_RESTART);
    return;
  }
  switch (r.cmd) {
  case STG_CTL_STATUS:
    send_json(c, stg__super_status_json(sup));
    break;
  case STG_CTL_STOP:
    send_json(c, json_pack("{s:b}", "ok", 1));
    /* This connection stays open until the supervisor exits. */
    stg__super_stop(sup);
    break;
  case STG_CTL_RESTART: {
    int rc = stg__super_restart(sup, r.component[0] ? r.component : NULL, err, sizeof err);
    if (rc == 0)
      send_json(c, json_pack("{s:b}", "ok", 1));
    else
      send_error(c, rc == UV_ENOENT ? "unknown_component"
                    : rc == UV_ECANCELED ? "stopping" : "bad_request",
                 err, false);
    break;
  }
  case STG_CTL_WAIT:
    if ((sup->state != SUP_STARTING && stg__super_settled(sup)) ||
        (r.progress && stg__super_fetching(sup))) {
      send_json(c, stg__super_status_json(sup));
    } else {
      c->waiting = true;
      c->progress = r.progress;
      uv_timer_start(&c->timer, on_wait_timeout, (uint64_t)r.timeout_ms, 0);
    }
    break;
  case STG_CTL_LOGS:
    do_logs(c, &r);
    break;
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  stg_ctl_conn_t *c = h->data;
  (void)suggested;
  /* The buffer never holds more than one line's cap plus one read. */
  size_t want = MAX_REQUEST + 4096;
  if (c->buf == NULL)
    c->buf = malloc(want);
  if (c->buf == NULL) {
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  *buf = uv_buf_init(c->buf + c->len, (unsigned)(want - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  stg_ctl_conn_t *c = s->data;
  (void)buf;
  if (n < 0) {
    conn_close(c);
    return;
  }
  c->len += (size_t)n;
  size_t start = 0;
  while (!c->closing && !c->shutting_down) {
    char *nl = memchr(c->buf + start, '\n', c->len - start);
    if (nl == NULL)
      break;
    size_t ll = (size_t)(nl - (c->buf + start));
    if (ll > MAX_REQUEST) {
      send_error(c, "too_long", "request line over 64 KiB", true);
      return;
    }
    handle_request(c, c->buf + start, ll);
    start += ll + 1;
    if (c->sub)
      return; /* a logs stream owns the connection now */
  }
  if (c->closing || c->shutting_down)
    return;
  memmove(c->buf, c->buf + start, c->len - start);
  c->len -= start;
  if (c->len > MAX_REQUEST)
    send_error(c, "too_long", "request line over 64 KiB", true);
}

static bool peer_allowed(stg_ctl_conn_t *c) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0)
    return false;
#if defined(__linux__)
  struct ucred uc;
  socklen_t l = sizeof uc;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &l) != 0)
    return false;
  return uc.uid == getuid();
#else
  uid_t uid;
  gid_t gid;
  if (getpeereid(fd, &uid, &gid) != 0)
    return false;
  return uid == getuid();
#endif
}

static void on_connection(uv_stream_t *server, int status) {
  stg_super_t *sup = container_of((uv_pipe_t *)server, stg_super_t, ctl);
  if (status < 0) {
    stg_warn("control socket: %s", uv_strerror(status));
    return;
  }
  stg_ctl_conn_t *c = calloc(1, sizeof *c);
  if (c == NULL)
    return;
  c->sup = sup;
  uv_pipe_init(sup->loop, &c->pipe, 0);
  uv_timer_init(sup->loop, &c->timer);
  uv_prepare_init(sup->loop, &c->flush);
  c->pipe.data = c;
  c->timer.data = c;
  c->flush.data = c;
  c->open_handles = 3;
  c->next = sup->conns;
  sup->conns = c;
  if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
    conn_close(c);
    return;
  }
  if (!peer_allowed(c)) {
    stg_warn("control socket: refused a connection from another user");
    send_error(c, "forbidden", "this supervisor belongs to another user", true);
    return;
  }
  if (sup->closing) {
    conn_close(c);
    return;
  }
  uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

int stg__ctl_listen(stg_super_t *sup) {
  uv_pipe_init(sup->loop, &sup->ctl, 0);
  sup->ctl_listening = true;
  unlink(sup->sock_path);
  mode_t old = umask(0077);
  int rc = uv_pipe_bind(&sup->ctl, sup->sock_path);
  umask(old);
  if (rc == 0)
    rc = chmod(sup->sock_path, 0600) == 0 ? 0 : -errno;
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&sup->ctl, 64, on_connection);
  if (rc != 0) {
    stg_error("control socket %s: %s", sup->sock_path, uv_strerror(rc));
    return rc;
  }
  return 0;
}

void stg__ctl_close_all(stg_super_t *sup) {
  for (stg_ctl_conn_t *c = sup->conns; c; c = c->next) {
    if (c->sub) {
      stg_logsub_cancel(c->sub);
      c->sub = NULL;
    }
    conn_close(c);
  }
}
