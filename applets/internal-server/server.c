/* internal-server (stigmer-server): the stack's API server. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "applets.h"
#include "config.h"
#include "log.h"

static const char usage[] =
    "Usage: stigmer-server [--home DIR] [--listen HOST:PORT] [--log-level LEVEL]\n"
    "       stigmer internal-server [OPTIONS]\n"
    "\n"
    "The Stigmer stack's API server (HTTP/1.1 + JSON). Normally started by the\n"
    "supervisor (`stigmer daemon start`), which passes STIGMER_HOME and\n"
    "NOTIFY_SOCKET; it can also run on its own.\n"
    "\n"
    "  --home DIR            STIGMER_HOME (default ~/.stigmer)\n"
    "  --listen HOST:PORT    address to listen on ([server] listen, default\n"
    "                        127.0.0.1:7234)\n"
    "  --log-level LEVEL     error, warn, info or debug\n"
    "  -h, --help            this text\n";

int internal_server_main(int argc, char **argv) {
  static const struct option opts[] = {
      {"home", required_argument, NULL, 'H'},
      {"listen", required_argument, NULL, 'l'},
      {"log-level", required_argument, NULL, 'L'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *name = "stigmer-server";
  opterr = 0;
  optind = 1;
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'H':
    case 'l':
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
  fprintf(stderr, "%s: the server is not built yet\n", name);
  return 1;
}
