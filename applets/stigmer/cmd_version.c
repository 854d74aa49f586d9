/* stigmer version [--json] */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "agentbin.h"
#include "cli.h"
#include "version.h"

static const char usage[] =
    "Usage: stigmer version [--json]\n"
    "\n"
    "Print the version, commit, build type, platform, and the versions of the\n"
    "libraries linked into this binary, as they report themselves at run time.\n"
    "\n"
    "  --json   one JSON object: version, commit, build_type, os, arch, libraries,\n"
    "           agent_runner (the embedded payload: origin, size, sha256)\n";

/* The embedded agent-runner payload: origin ("reference", "path", "none"),
 * size, sha256 (null when none). */
static json_t *payload_json(void) {
  const stg_agentbin_payload_t *p = stg_agentbin_embedded();
  return json_pack("{s:s, s:I, s:o}", "origin", p->origin, "size", (json_int_t)p->size,
                   "sha256", p->data ? json_string(p->sha256) : json_null());
}

static int print_json(void) {
  stg_library_version_t libs[STG_VERSION_LIBRARIES];
  stg_version_libraries(libs);
  json_t *l = json_object();
  for (int i = 0; i < STG_VERSION_LIBRARIES; i++)
    json_object_set_new(l, libs[i].name, json_string(libs[i].version));
  json_t *root = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o}", "version", stg_version(),
                           "commit", stg_version_commit(), "build_type",
                           stg_version_build_type(), "os", stg_version_os(), "arch",
                           stg_version_arch(), "libraries", l, "agent_runner",
                           payload_json());
  char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(root);
  if (s == NULL)
    return 1;
  printf("%s\n", s);
  free(s);
  return 0;
}

int stg_cli_version(stg_cli_t *cli, int argc, char **argv) {
  (void)cli;
  int json = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0)
      json = 1;
    else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fputs(usage, stdout);
      return 0;
    } else
      return stg_cli_usage_error("version: unknown argument '%s'", argv[i]);
  }
  if (json)
    return print_json();
  stg_library_version_t libs[STG_VERSION_LIBRARIES];
  stg_version_libraries(libs);
  printf("stigmer %s\n", stg_version());
  printf("commit:    %s\n", stg_version_commit());
  printf("build:     %s\n", stg_version_build_type());
  printf("platform:  %s-%s\n", stg_version_os(), stg_version_arch());
  printf("libraries:\n");
  for (int i = 0; i < STG_VERSION_LIBRARIES; i++)
    printf("  %-9s %s\n", libs[i].name, libs[i].version);
  const stg_agentbin_payload_t *p = stg_agentbin_embedded();
  if (p->data) {
    char hs[32];
    stg_agentbin_human_size(p->size, hs, sizeof hs);
    printf("agent-runner: embedded (%s), %s, sha256 %s\n", p->origin, hs, p->sha256);
  } else {
    printf("agent-runner: none embedded (fetched at run time)\n");
  }
  return 0;
}
