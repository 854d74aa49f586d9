/* The `stigmer` command-line interface: shared state of its commands.
 * Each command group lives in its own cmd_*.c file and is listed in the
 * command table in stigmer.c. */
#ifndef STG_CLI_H
#define STG_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

#define STG_CLI_MAX_SETS 64

typedef struct {
  const char *home;       /* --home, or NULL */
  const char *log_level;  /* --log-level, or NULL */
  const char *sets[STG_CLI_MAX_SETS]; /* --set section.key=value */
  unsigned n_sets;
  bool loaded;
  stg_config_t cfg;
} stg_cli_t;

/* Loads the configuration once (defaults, file, environment, flags).
 * On a bad value prints the error and exits 2: only for applet code. */
stg_config_t *stg_cli_config(stg_cli_t *cli);
void stg_cli_free(stg_cli_t *cli);

/* Prints "stigmer: <msg>" and the --help pointer; returns 2. */
int stg_cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A command: argv[0] is the command's own name. */
typedef int (*stg_cli_cmd_fn)(stg_cli_t *cli, int argc, char **argv);

int stg_cli_version(stg_cli_t *cli, int argc, char **argv);
int stg_cli_config_cmd(stg_cli_t *cli, int argc, char **argv);
int stg_cli_daemon(stg_cli_t *cli, int argc, char **argv);
int stg_cli_server(stg_cli_t *cli, int argc, char **argv);
/* `stigmer daemon logs ...` (cmd_logs.c); argv[0] is "logs". */
int stg_cli_daemon_logs(stg_cli_t *cli, int argc, char **argv);
/* `stigmer daemon install-service|uninstall-service` (cmd_service.c). */
int stg_cli_daemon_install_service(stg_cli_t *cli, int argc, char **argv);
int stg_cli_daemon_uninstall_service(stg_cli_t *cli, int argc, char **argv);
int stg_cli_agent_runner(stg_cli_t *cli, int argc, char **argv);
/* `stigmer run FILE.ini` and `stigmer executions ...` (cmd_run.c). */
int stg_cli_run(stg_cli_t *cli, int argc, char **argv);
int stg_cli_executions(stg_cli_t *cli, int argc, char **argv);
/* Starts the daemon unless it is running, as `stigmer daemon start` does,
 * and waits until the server and the workflow runner are ready (cmd_daemon.c).
 * Returns 0, or 1 after saying what failed. */
int stg_cli_ensure_daemon(stg_cli_t *cli);

/* Download progress on stderr (cmd_agent_runner.c), for `agent-runner fetch`
 * and `daemon start`: a bar redrawn in place on a terminal, else a line at
 * most once a second. */
typedef struct {
  bool tty;           /* stderr is a terminal */
  bool drawn;         /* a bar is on the current line */
  uint64_t last_line; /* uv_hrtime() of the last line (not a terminal) */
} stg_cli_progress_t;
void stg_cli_progress_init(stg_cli_progress_t *p);
void stg_cli_progress_show(stg_cli_progress_t *p, const char *what, uint64_t bytes,
                           uint64_t total, double rate);
void stg_cli_progress_end(stg_cli_progress_t *p); /* ends the bar's line */

#endif
