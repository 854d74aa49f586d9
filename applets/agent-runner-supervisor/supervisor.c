/* agent-runner-supervisor: the daemon that supervises the stack. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "applets.h"
#include "config.h"
#include "log.h"

static const char usage[] =
    "Usage: agent-runner-supervisor [--home DIR] [--log-level LEVEL]\n"
    "       stigmer agent-runner-supervisor [OPTIONS]\n"
    "\n"
    "The supervisor of the Stigmer stack. Normally started by\n"
    "`stigmer daemon start` in the background or `stigmer daemon run` in the\n"
    "foreground (systemd, launchd).\n"
    "\n"
    "  --home DIR            STIGMER_HOME (default ~/.stigmer)\n"
    "  --log-level LEVEL     error, warn, info or debug\n"
    "  -h, --help            this text\n";

int agent_runner_supervisor_main(int argc, char **argv) {
  static const struct option opts[] = {
      {"home", required_argument, NULL, 'H'},
      {"log-level", required_argument, NULL, 'L'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *name = "agent-runner-supervisor";
  opterr = 0;
  optind = 1;
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'H':
    case 'L':
      break;
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
  fprintf(stderr, "%s: the supervisor is not built yet\n", name);
  return 1;
}
