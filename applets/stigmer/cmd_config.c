/* stigmer config show [--json] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "Usage: stigmer config show [--json]\n"
    "\n"
    "Print the effective configuration: every key, its value, and where the\n"
    "value came from (default, FILE:LINE, env NAME, flag, or inherited from\n"
    "[supervisor]/[restart]). Keys are documented in docs/config.md.\n";

int stg_cli_config_cmd(stg_cli_t *cli, int argc, char **argv) {
  if (argc < 2)
    return stg_cli_usage_error("config: missing subcommand (show)");
  if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    fputs(usage, stdout);
    return 0;
  }
  if (strcmp(argv[1], "show") != 0)
    return stg_cli_usage_error("config: unknown subcommand '%s'", argv[1]);
  int json = 0;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0)
      json = 1;
    else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fputs(usage, stdout);
      return 0;
    } else
      return stg_cli_usage_error("config show: unknown argument '%s'", argv[i]);
  }
  stg_config_t *cfg = stg_cli_config(cli);
  if (json) {
    char *s = stg_config_show_json(cfg);
    if (s == NULL)
      return 1;
    printf("%s\n", s);
    free(s);
  } else {
    stg_config_show(cfg, stdout);
  }
  return 0;
}
