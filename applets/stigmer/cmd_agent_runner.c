/* stigmer agent-runner status|path|extract|install PATH|reset */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "agentbin.h"
#include "cli.h"

static const char usage[] =
    "Usage: stigmer agent-runner COMMAND\n"
    "\n"
    "The agent-runner program the supervisor runs (docs/agent-runner.md).\n"
    "\n"
    "Commands:\n"
    "  status [--json]   the record (bin/agent-runner.json), whether the file\n"
    "                    matches it, the embedded payload, and what the\n"
    "                    supervisor would do on its next start\n"
    "  path              the path the supervisor runs: [agent-runner] path, else\n"
    "                    $STIGMER_HOME/bin/agent-runner\n"
    "  extract           extract the embedded agent-runner when the file is\n"
    "                    missing or differs from it (never over a pinned one)\n"
    "  install PATH [--version V]\n"
    "                    copy a hand-built agent-runner into place atomically and\n"
    "                    pin it: extraction and fetching leave it alone\n"
    "  reset             unpin: remove the installed binary and its record, then\n"
    "                    extract the embedded agent-runner (if there is one)\n"
    "\n"
    "Exit status: 0 success (status: the supervisor has an agent-runner to run,\n"
    "possibly after extracting it); 1 failure; 2 usage or configuration error;\n"
    "3 no usable agent-runner (status, extract, reset): nothing embedded and none\n"
    "installed, so the supervisor would fetch one, or a configured or pinned\n"
    "binary is missing.\n";

enum { EXIT_MISSING = 3 };

static json_t *str_or_null(const char *s) {
  return s && *s ? json_string(s) : json_null();
}

static int status_json(const stg_agentbin_status_t *st) {
  json_t *root = json_object();
  json_object_set_new(root, "path", json_string(st->path));
  json_object_set_new(root, "configured", json_boolean(st->configured));
  json_object_set_new(root, "file",
                      json_pack("{s:b, s:I, s:o}", "exists", st->exists, "size",
                                (json_int_t)st->size, "sha256", str_or_null(st->sha256)));
  if (st->have_record) {
    const stg_agentbin_record_t *r = &st->record;
    json_t *rec = json_pack("{s:s, s:s, s:I, s:s, s:s, s:I, s:I, s:I}", "origin", r->origin,
                            "version", r->version, "size", (json_int_t)r->size, "sha256",
                            r->sha256, "when", r->when, "mtime_ns", (json_int_t)r->mtime_ns,
                            "ctime_ns", (json_int_t)r->ctime_ns, "inode",
                            (json_int_t)r->inode);
    if (r->source[0])
      json_object_set_new(rec, "source", json_string(r->source));
    json_object_set_new(root, "record", rec);
  } else {
    json_object_set_new(root, "record", json_null());
  }
  json_object_set_new(root, "record_error", str_or_null(st->record_error));
  json_object_set_new(root, "matches_record", json_boolean(st->matches_record));
  json_object_set_new(root, "pinned", json_boolean(st->pinned));
  json_object_set_new(root, "embedded",
                      json_pack("{s:s, s:I, s:o}", "origin", st->payload->origin, "size",
                                (json_int_t)st->payload->size, "sha256",
                                str_or_null(st->payload->sha256)));
  json_object_set_new(root, "state",
                      json_string(st->state == STG_AGENTBIN_READY ? "ready" : "missing"));
  json_object_set_new(root, "would_write", json_boolean(st->would_write));
  json_object_set_new(root, "plan", json_string(st->plan));
  char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(root);
  if (s == NULL)
    return 1;
  printf("%s\n", s);
  free(s);
  return 0;
}

static void status_text(const stg_agentbin_status_t *st) {
  char hs[32];
  printf("path:      %s%s\n", st->path, st->configured ? " (from [agent-runner] path)" : "");
  if (st->exists) {
    stg_agentbin_human_size(st->size, hs, sizeof hs);
    printf("file:      %s, sha256 %s\n", hs, st->sha256[0] ? st->sha256 : "-");
  } else {
    printf("file:      missing\n");
  }
  if (!st->configured) {
    if (st->have_record) {
      const stg_agentbin_record_t *r = &st->record;
      stg_agentbin_human_size(r->size, hs, sizeof hs);
      printf("record:    %s, version %s, %s, sha256 %s, written %s\n", r->origin, r->version,
             hs, r->sha256, r->when);
      if (r->source[0])
        printf("source:    %s\n", r->source);
    } else if (st->record_error[0]) {
      printf("record:    unreadable: %s\n", st->record_error);
    } else {
      printf("record:    none\n");
    }
    printf("matches:   %s\n", !st->have_record || !st->exists ? "-"
                              : st->matches_record         ? "yes"
                                                           : "no");
    printf("pinned:    %s\n", st->pinned ? "yes (installed; `stigmer agent-runner reset` unpins)"
                                         : "no");
  }
  if (st->payload->data) {
    stg_agentbin_human_size(st->payload->size, hs, sizeof hs);
    printf("embedded:  %s, %s, sha256 %s\n", st->payload->origin, hs, st->payload->sha256);
  } else {
    printf("embedded:  none (this build fetches the agent-runner)\n");
  }
  printf("state:     %s\n", st->state == STG_AGENTBIN_READY ? "ready" : "missing");
  printf("next start: %s\n", st->plan);
}

static int cmd_status(stg_config_t *cfg, int argc, char **argv) {
  bool json = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0)
      json = true;
    else
      return stg_cli_usage_error("agent-runner status: unknown argument '%s'", argv[i]);
  }
  stg_agentbin_status_t *st = malloc(sizeof *st);
  if (st == NULL)
    return 1;
  int rc = stg_agentbin_status(cfg, NULL, st);
  if (rc != 0) {
    fprintf(stderr, "stigmer: agent-runner status: %s\n",
            st->plan[0] ? st->plan : uv_strerror(rc));
    free(st);
    return 1;
  }
  int ret = st->state == STG_AGENTBIN_READY ? 0 : EXIT_MISSING;
  if (json) {
    if (status_json(st) != 0)
      ret = 1;
  } else {
    status_text(st);
  }
  free(st);
  return ret;
}

static int cmd_path(stg_config_t *cfg, int argc, char **argv) {
  if (argc > 1)
    return stg_cli_usage_error("agent-runner path: unknown argument '%s'", argv[1]);
  char path[4096];
  int rc = stg_agentbin_path(cfg, path, sizeof path);
  if (rc != 0) {
    fprintf(stderr, "stigmer: agent-runner path: %s\n", uv_strerror(rc));
    return 1;
  }
  printf("%s\n", path);
  return 0;
}

static int cmd_extract(stg_config_t *cfg, int argc, char **argv) {
  if (argc > 1)
    return stg_cli_usage_error("agent-runner extract: unknown argument '%s'", argv[1]);
  char path[4096], desc[1024];
  stg_agentbin_state_t state;
  int rc = stg_agentbin_ensure(cfg, path, sizeof path, &state, desc, sizeof desc);
  if (rc != 0) {
    fprintf(stderr, "stigmer: agent-runner extract: %s\n", desc[0] ? desc : uv_strerror(rc));
    return 1;
  }
  if (state != STG_AGENTBIN_READY) {
    fprintf(stderr, "stigmer: agent-runner extract: %s\n", desc);
    return EXIT_MISSING;
  }
  printf("%s\n", desc);
  return 0;
}

static int cmd_install(stg_config_t *cfg, int argc, char **argv) {
  const char *src = NULL, *version = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--version") == 0) {
      if (i + 1 >= argc)
        return stg_cli_usage_error("agent-runner install: --version needs a value");
      version = argv[++i];
    } else if (strncmp(argv[i], "--version=", 10) == 0) {
      version = argv[i] + 10;
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      return stg_cli_usage_error("agent-runner install: unknown option '%s'", argv[i]);
    } else if (src == NULL) {
      src = argv[i];
    } else {
      return stg_cli_usage_error("agent-runner install: unexpected argument '%s'", argv[i]);
    }
  }
  if (src == NULL)
    return stg_cli_usage_error("agent-runner install: expected the PATH of an agent-runner");
  char desc[1024];
  int rc = stg_agentbin_install_file(cfg, src, "installed", version, NULL, desc, sizeof desc);
  if (rc != 0) {
    fprintf(stderr, "stigmer: agent-runner install: %s\n", desc[0] ? desc : uv_strerror(rc));
    return 1;
  }
  printf("%s\n", desc);
  printf("a running daemon uses it from the agent-runner's next start "
         "(stigmer daemon restart agent-runner)\n");
  return 0;
}

static int cmd_reset(stg_config_t *cfg, int argc, char **argv) {
  if (argc > 1)
    return stg_cli_usage_error("agent-runner reset: unknown argument '%s'", argv[1]);
  char desc[2048];
  stg_agentbin_state_t state;
  int rc = stg_agentbin_reset(cfg, NULL, &state, desc, sizeof desc);
  if (rc != 0) {
    fprintf(stderr, "stigmer: agent-runner reset: %s\n", desc[0] ? desc : uv_strerror(rc));
    return 1;
  }
  printf("%s\n", desc);
  return state == STG_AGENTBIN_READY ? 0 : EXIT_MISSING;
}

int stg_cli_agent_runner(stg_cli_t *cli, int argc, char **argv) {
  if (argc < 2) {
    fputs(usage, stderr);
    return 2;
  }
  const char *sub = argv[1];
  if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "help") == 0) {
    fputs(usage, stdout);
    return 0;
  }
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fputs(usage, stdout);
      return 0;
    }
  }
  static const struct {
    const char *name;
    int (*fn)(stg_config_t *cfg, int argc, char **argv);
  } subs[] = {
      {"extract", cmd_extract}, {"install", cmd_install}, {"path", cmd_path},
      {"reset", cmd_reset},     {"status", cmd_status},
  };
  for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
    if (strcmp(subs[i].name, sub) == 0)
      return subs[i].fn(stg_cli_config(cli), argc - 1, argv + 1);
  return stg_cli_usage_error("agent-runner: unknown command '%s'", sub);
}
