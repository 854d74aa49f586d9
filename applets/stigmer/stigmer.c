/* stigmer: the user's command-line interface. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "applets.h"
#include "cli.h"
#include "log.h"
#include "version.h"

typedef struct {
  const char *name;
  stg_cli_cmd_fn fn;
  const char *summary; /* NULL: not listed in --help (an alias) */
} command_t;

static const command_t commands[] = {
    {"agent-runner", stg_cli_agent_runner,
     "agent-runner status|path|extract|fetch|install PATH|reset\n"
     "                         the agent-runner binary (docs/agent-runner.md)"},
    {"config", stg_cli_config_cmd, "config show [--json]   the effective configuration"},
    {"daemon", stg_cli_daemon, "daemon start|stop|restart|status|logs|run|install-service\n"
                               "                         the stack in the background (docs/daemon.md)"},
    {"executions", stg_cli_executions, "executions list|show|cancel|logs\n"
                                       "                         workflow executions (docs/run.md)"},
    {"help", NULL, "help                   this text"},
    {"run", stg_cli_run, "run FILE.ini [--input NAME=VALUE]... [--detach]\n"
                         "                         run a workflow and follow it"},
    {"server", stg_cli_server, "server [stop|status|logs]\n"
                               "                         aliases of daemon start|stop|status|logs"},
    {"version", stg_cli_version, "version [--json]       versions of stigmer and its libraries"},
};

static void print_help(FILE *out) {
  fprintf(out,
          "Usage: stigmer [OPTIONS] COMMAND [ARGS...]\n"
          "\n"
          "Run the local Stigmer stack.\n"
          "\n"
          "Commands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (commands[i].summary)
      fprintf(out, "  %s\n", commands[i].summary);
  fprintf(out,
          "\n"
          "Options:\n"
          "  --home DIR                STIGMER_HOME (default ~/.stigmer)\n"
          "  --log-level LEVEL         error, warn, info or debug\n"
          "  --set SECTION.KEY=VALUE   override a config key (repeatable)\n"
          "  -h, --help                this text\n"
          "  -V, --version             same as `stigmer version`\n"
          "  --list                    list the applets of this binary\n"
          "  --install [-s] DIR        create the applet links in DIR (-s: symbolic)\n"
          "\n"
          "Exit status: 0 success, 1 failure, 2 usage or configuration error,\n"
          "127 unknown applet. `stigmer COMMAND --help` describes a command.\n"
          "Configuration: docs/config.md; STIGMER_<SECTION>_<KEY> overrides a key.\n");
}

int stg_cli_usage_error(const char *fmt, ...) {
  va_list ap;
  fputs("stigmer: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("\nTry 'stigmer --help' for more information.\n", stderr);
  return 2;
}

stg_config_t *stg_cli_config(stg_cli_t *cli) {
  if (cli->loaded)
    return &cli->cfg;
  char err[4608];
  stg_config_overrides_t o = {cli->home, cli->log_level, cli->sets, cli->n_sets};
  if (stg_config_load_all(&cli->cfg, &o, err, sizeof err) != 0) {
    fprintf(stderr, "stigmer: %s\n", err);
    exit(2);
  }
  stg_log_set_level(cli->cfg.log.level);
  cli->loaded = true;
  return &cli->cfg;
}

void stg_cli_free(stg_cli_t *cli) {
  if (cli->loaded)
    stg_config_free(&cli->cfg);
  cli->loaded = false;
}

int stigmer_main(int argc, char **argv) {
  static const struct option opts[] = {
      {"home", required_argument, NULL, 'H'},
      {"log-level", required_argument, NULL, 'L'},
      {"set", required_argument, NULL, 'S'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0},
  };
  stg_cli_t cli;
  memset(&cli, 0, sizeof cli);
  stg_log_set_name("stigmer");
  opterr = 0;
  optind = 1;
  int c;
  /* "+": stop at the command; its own options are its business. */
  while ((c = getopt_long(argc, argv, "+hV", opts, NULL)) != -1) {
    switch (c) {
    case 'H':
      cli.home = optarg;
      break;
    case 'L': {
      stg_log_level_t l;
      if (stg_log_level_parse(optarg, &l) != 0)
        return stg_cli_usage_error("--log-level: expected one of error, warn, "
                                   "info, debug, got '%s'", optarg);
      cli.log_level = optarg;
      break;
    }
    case 'S':
      if (strchr(optarg, '=') == NULL || optarg[0] == '=')
        return stg_cli_usage_error("--set: expected SECTION.KEY=VALUE, got '%s'", optarg);
      if (cli.n_sets == STG_CLI_MAX_SETS)
        return stg_cli_usage_error("--set: more than %d", STG_CLI_MAX_SETS);
      cli.sets[cli.n_sets++] = optarg;
      break;
    case 'h':
      print_help(stdout);
      return 0;
    case 'V':
      return stg_cli_version(&cli, 1, (char *[]){"version", NULL});
    case ':':
      return stg_cli_usage_error("option '%s' needs a value", argv[optind - 1]);
    default:
      return stg_cli_usage_error("unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind >= argc) {
    print_help(stderr);
    return 2;
  }
  const char *name = argv[optind];
  if (strcmp(name, "help") == 0) {
    print_help(stdout);
    return 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    if (commands[i].fn && strcmp(commands[i].name, name) == 0) {
      int rc = commands[i].fn(&cli, argc - optind, argv + optind);
      stg_cli_free(&cli);
      return rc;
    }
  }
  return stg_cli_usage_error("unknown command '%s'", name);
}
