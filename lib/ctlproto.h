/* The control protocol's requests, parsed without side effects (the
 * supervisor acts on them; the fuzz target checks the parser alone).
 * Protocol: docs/internals/control.md. */
#ifndef STG_CTLPROTO_H
#define STG_CTLPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STG_CTL_MAX_LINE (64u * 1024u) /* a longer request line is refused */
#define STG_CTL_MAX_COMPONENTS 8       /* names in one `logs` request */

typedef enum {
  STG_CTL_STATUS = 0,
  STG_CTL_STOP,
  STG_CTL_RESTART,
  STG_CTL_WAIT,
  STG_CTL_LOGS
} stg_ctl_cmd_t;

typedef struct {
  stg_ctl_cmd_t cmd;
  char component[64];       /* restart: "" for the whole stack */
  int64_t timeout_ms;       /* wait: default 60000 */
  bool progress;            /* wait: also answer while a download transfers */
  uint64_t tail;            /* logs: default 100 */
  bool follow;              /* logs */
  unsigned n_components;    /* logs: 0 means all */
  char components[STG_CTL_MAX_COMPONENTS][64];
} stg_ctl_request_t;

/* Parses one request line (without its newline). Returns 0, or a negative
 * error with *code ("bad_request", "too_long", "unknown_component") and a
 * message in err. Known component names: server, workflow-runner,
 * agent-runner, and for logs also supervisor. */
int stg_ctlproto_parse(const char *line, size_t len, stg_ctl_request_t *out,
                       const char **code, char *err, size_t errlen);

#endif
