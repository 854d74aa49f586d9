/* A blocking client of the control socket (run/supervisor.sock), for the
 * CLI. Protocol: docs/internals/control.md. */
#ifndef STG_CTLCLIENT_H
#define STG_CTLCLIENT_H

#include <stddef.h>

#include <jansson.h>

#include "config.h"

typedef struct {
  int fd;
  char *buf;    /* bytes read; buf[start, len) not yet returned */
  size_t start;
  size_t len;
  size_t cap;
} stg_ctl_t;

/* Connect to $home/run/supervisor.sock. Returns 0, UV_ENOENT or
 * UV_ECONNREFUSED when no supervisor is listening, or another negative
 * error. */
int stg_ctl_connect(stg_ctl_t *c, const stg_config_t *cfg);

/* Send one request object (a line of JSON). Returns 0 or a negative error. */
int stg_ctl_send(stg_ctl_t *c, json_t *request);

/* Read one reply line, parsed. timeout_ms < 0 waits for ever; 0 returns
 * UV_ETIMEDOUT at once when no whole line has arrived (e.g. to flush
 * output before waiting). Returns 0 and
 * *out (caller decrefs), UV_EOF when the supervisor closed the connection,
 * UV_ETIMEDOUT, or another negative error. */
int stg_ctl_recv(stg_ctl_t *c, int timeout_ms, json_t **out);

/* Send a request and read one reply. */
int stg_ctl_call(const stg_config_t *cfg, json_t *request, int timeout_ms, json_t **reply);

void stg_ctl_close(stg_ctl_t *c);

#endif
