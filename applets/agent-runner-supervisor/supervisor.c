/* agent-runner-supervisor: the daemon that supervises the stack. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "applets.h"
#include "config.h"
#include "log.h"
#include "parse.h"
#include "super.h"

static const char usage[] =
    "Usage: agent-runner-supervisor [OPTIONS]\n"
    "       stigmer agent-runner-supervisor [OPTIONS]\n"
    "\n"
    "The supervisor of the Stigmer stack: starts the server, the workflow runner\n"
    "and the agent-runner, restarts them, captures their logs, and answers the\n"
    "control socket. Normally started by `stigmer daemon start` in the background\n"
    "or `stigmer daemon run` in the foreground (systemd, launchd). It never forks.\n"
    "\n"
    "  --home DIR                STIGMER_HOME (default ~/.stigmer)\n"
    "  --log-level LEVEL         error, warn, info or debug\n"
    "  --set SECTION.KEY=VALUE   override a config key (repeatable)\n"
    "  --echo                    copy the components' log lines to stderr\n"
    "  --color                   colour the copied lines' name prefixes\n"
    "  --ready-fd N              write \"ok\" to descriptor N once the control socket\n"
    "                            listens, then close it\n"
    "  -h, --help                this text\n"
    "\n"
    "Exit status: 0 after a clean stop, 1 if another supervisor runs or setup\n"
    "failed, 2 for a usage or configuration error.\n";

#define MAX_SETS 64

typedef struct {
  const char *home;
  const char *log_level;
  const char *sets[MAX_SETS];
  unsigned n_sets;
} sup_args_t;

static int load_config(stg_config_t *cfg, char *err, size_t errlen, void *data) {
  const sup_args_t *a = data;
  stg_config_overrides_t o = {a->home, a->log_level, a->sets, a->n_sets};
  return stg_config_load_all(cfg, &o, err, errlen);
}

int agent_runner_supervisor_main(int argc, char **argv) {
  static const struct option opts[] = {
      {"home", required_argument, NULL, 'H'},
      {"log-level", required_argument, NULL, 'L'},
      {"set", required_argument, NULL, 'S'},
      {"echo", no_argument, NULL, 'e'},
      {"color", no_argument, NULL, 'c'},
      {"ready-fd", required_argument, NULL, 'r'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *name = "agent-runner-supervisor";
  sup_args_t a;
  memset(&a, 0, sizeof a);
  bool echo = false, color = false;
  int ready_fd = -1;
  opterr = 0;
  optind = 1;
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'H':
      a.home = optarg;
      break;
    case 'L':
      a.log_level = optarg;
      break;
    case 'S':
      if (strchr(optarg, '=') == NULL || a.n_sets == MAX_SETS) {
        fprintf(stderr, "%s: --set: expected SECTION.KEY=VALUE, got '%s'\n", name, optarg);
        return 2;
      }
      a.sets[a.n_sets++] = optarg;
      break;
    case 'e':
      echo = true;
      break;
    case 'c':
      color = true;
      break;
    case 'r': {
      int64_t v;
      if (stg_parse_int(optarg, 0, INT_MAX, &v) != 0) {
        fprintf(stderr, "%s: --ready-fd: expected a descriptor number, got '%s'\n", name,
                optarg);
        return 2;
      }
      ready_fd = (int)v;
      break;
    }
    case 'h':
      fputs(usage, stdout);
      return 0;
    default:
      fprintf(stderr, "%s: unknown option or missing value '%s'\n"
              "Try '%s --help' for more information.\n", name, argv[optind - 1], name);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "%s: unexpected argument '%s'\n"
            "Try '%s --help' for more information.\n", name, argv[optind], name);
    return 2;
  }
  stg_log_set_name("supervisor");
  stg_config_t *cfg = calloc(1, sizeof *cfg);
  char err[4608];
  if (cfg == NULL || load_config(cfg, err, sizeof err, &a) != 0) {
    fprintf(stderr, "%s: %s\n", name, cfg ? err : "out of memory");
    free(cfg);
    if (ready_fd >= 0)
      close(ready_fd);
    return 2;
  }
  stg_log_set_level(cfg->log.level);
  char exe[PATH_MAX];
  size_t exelen = sizeof exe;
  int rc = uv_exepath(exe, &exelen);
  if (rc != 0) {
    fprintf(stderr, "%s: cannot find this binary: %s\n", name, uv_strerror(rc));
    stg_config_free(cfg);
    free(cfg);
    return 1;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  stg_super_options_t so;
  memset(&so, 0, sizeof so);
  so.cfg = cfg;
  so.exe = exe;
  so.ready_fd = ready_fd;
  so.echo = echo;
  so.color = color;
  so.reload = load_config;
  so.reload_data = &a;
  int code = stg_super_run(&loop, &so);
  int crc = uv_loop_close(&loop);
  if (crc != 0)
    stg_warn("event loop closed with handles still open: %s", uv_strerror(crc));
  return code;
}
