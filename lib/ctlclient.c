#include "ctlclient.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <uv.h>

#define MAX_LINE (64u << 20) /* a reply line cap: status and log lines are small */

int stg_ctl_connect(stg_ctl_t *c, const stg_config_t *cfg) {
  memset(c, 0, sizeof *c);
  c->fd = -1;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (stg_config_path(cfg, "run/supervisor.sock", sa.sun_path, sizeof sa.sun_path) == NULL)
    return UV_ENAMETOOLONG;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  c->fd = fd;
  return 0;
}

int stg_ctl_send(stg_ctl_t *c, json_t *request) {
  char *s = json_dumps(request, JSON_COMPACT);
  if (s == NULL)
    return UV_ENOMEM;
  size_t n = strlen(s);
  const char *p = s;
  int rc = 0;
  /* The line, then its newline. */
  for (int part = 0; part < 2 && rc == 0; part++) {
    const char *q = part ? "\n" : p;
    size_t left = part ? 1 : n;
    while (left > 0) {
      ssize_t w = send(c->fd, q, left, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR)
          continue;
        rc = -errno;
        break;
      }
      q += w;
      left -= (size_t)w;
    }
  }
  free(s);
  return rc;
}

int stg_ctl_recv(stg_ctl_t *c, int timeout_ms, json_t **out) {
  *out = NULL;
  size_t scanned = c->start; /* no newline in buf[start, scanned) */
  for (;;) {
    char *nl = c->len > scanned ? memchr(c->buf + scanned, '\n', c->len - scanned) : NULL;
    if (nl != NULL) {
      char *line = c->buf + c->start;
      size_t ll = (size_t)(nl - line);
      json_error_t jerr;
      json_t *j = json_loadb(line, ll, 0, &jerr);
      c->start += ll + 1;
      if (c->start == c->len)
        c->start = c->len = 0;
      if (j == NULL)
        return UV_EPROTO;
      *out = j;
      return 0;
    }
    scanned = c->len;
    /* Move the partial line to the front (once per read, not per line),
     * and grow if it fills the buffer. */
    if (c->start > 0) {
      memmove(c->buf, c->buf + c->start, c->len - c->start);
      c->len -= c->start;
      scanned = c->len;
      c->start = 0;
    }
    if (c->len == c->cap) {
      if (c->cap >= MAX_LINE)
        return UV_E2BIG;
      size_t nc = c->cap ? c->cap * 2 : 65536;
      char *nb = realloc(c->buf, nc);
      if (nb == NULL)
        return UV_ENOMEM;
      c->buf = nb;
      c->cap = nc;
    }
    if (timeout_ms >= 0) {
      struct pollfd pfd = {c->fd, POLLIN, 0};
      int pr = poll(&pfd, 1, timeout_ms);
      if (pr < 0) {
        if (errno == EINTR)
          continue;
        return -errno;
      }
      if (pr == 0)
        return UV_ETIMEDOUT;
    }
    ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      if (errno == ECONNRESET)
        return UV_EOF;
      return -errno;
    }
    if (r == 0)
      return UV_EOF;
    c->len += (size_t)r;
  }
}

int stg_ctl_call(const stg_config_t *cfg, json_t *request, int timeout_ms, json_t **reply) {
  stg_ctl_t c;
  int rc = stg_ctl_connect(&c, cfg);
  if (rc == 0)
    rc = stg_ctl_send(&c, request);
  if (rc == 0)
    rc = stg_ctl_recv(&c, timeout_ms, reply);
  stg_ctl_close(&c);
  return rc;
}

void stg_ctl_close(stg_ctl_t *c) {
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  free(c->buf);
  c->buf = NULL;
  c->start = c->len = c->cap = 0;
}
