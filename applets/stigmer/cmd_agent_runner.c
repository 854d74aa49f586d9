/* stigmer agent-runner status|path|extract|fetch|install PATH|reset */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "agentbin.h"
#include "agentfetch.h"
#include "cli.h"
#include "parse.h"

static const char usage[] =
    "Usage: stigmer agent-runner COMMAND\n"
    "\n"
    "The agent-runner program the supervisor runs (docs/agent-runner.md).\n"
    "\n"
    "Commands:\n"
    "  status [--json]   the record (bin/agent-runner.json), whether the file\n"
    "                    matches it, the embedded payload, what the supervisor\n"
    "                    would do on its next start, what it would fetch, and\n"
    "                    the downloads in the cache\n"
    "  path              the path the supervisor runs: [agent-runner] path, else\n"
    "                    $STIGMER_HOME/bin/agent-runner\n"
    "  extract           extract the embedded agent-runner when the file is\n"
    "                    missing or differs from it (never over a pinned one)\n"
    "  fetch [--attempts N]\n"
    "                    download the agent-runner release ([agent-runner] version,\n"
    "                    else this build's version) into the cache, verify it and\n"
    "                    install it, showing progress; a verified cached copy is\n"
    "                    installed without a download. N attempts in all\n"
    "                    (default 5; 0: retry for ever)\n"
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

/* What a fetch would get, or why there is none. */
static json_t *fetch_json(const stg_config_t *cfg) {
  stg_agentfetch_plan_t plan;
  char why[1024];
  int rc = stg_agentfetch_plan(cfg, &plan, why, sizeof why);
  if (rc != 0)
    return json_pack("{s:b, s:s}", "possible", 0, "why", why);
  return json_pack("{s:b, s:s, s:s, s:s}", "possible", 1, "version", plan.version, "url",
                   plan.url, "cache", plan.dir);
}

static void cache_json_one(const char *version, uint64_t size, const char *sha256,
                           uint64_t partial, void *arg) {
  json_array_append_new(arg, json_pack("{s:s, s:b, s:I, s:o, s:I}", "version", version,
                                       "verified", sha256[0] != '\0', "size",
                                       (json_int_t)size, "sha256", str_or_null(sha256),
                                       "partial", (json_int_t)partial));
}

static void cache_text_one(const char *version, uint64_t size, const char *sha256,
                           uint64_t partial, void *arg) {
  char hs[32], ps[32];
  int *n = arg;
  stg_agentbin_human_size(size, hs, sizeof hs);
  stg_agentbin_human_size(partial, ps, sizeof ps);
  printf("%s%s", (*n)++ ? "           " : "", version);
  if (sha256[0])
    printf(": %s, sha256 %.12s... (verified)", hs, sha256);
  else
    printf(": no verified file");
  if (partial)
    printf("; %s partial download", ps);
  printf("\n");
}

static int status_json(const stg_config_t *cfg, const stg_agentbin_status_t *st) {
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
  json_object_set_new(root, "fetch", fetch_json(cfg));
  json_t *cache = json_array();
  stg_agentfetch_cache_list(cfg, cache_json_one, cache);
  json_object_set_new(root, "cache", cache);
  char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(root);
  if (s == NULL)
    return 1;
  printf("%s\n", s);
  free(s);
  return 0;
}

static void status_text(const stg_config_t *cfg, const stg_agentbin_status_t *st) {
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
  stg_agentfetch_plan_t plan;
  char why[1024];
  if (stg_agentfetch_plan(cfg, &plan, why, sizeof why) == 0)
    printf("fetch:     version %s from %s\n", plan.version, plan.url);
  else
    printf("fetch:     not possible: %s\n", why);
  printf("cache:     ");
  int n = 0;
  int rc = stg_agentfetch_cache_list(cfg, cache_text_one, &n);
  if (rc != 0)
    printf("unreadable: %s\n", uv_strerror(rc));
  else if (n == 0)
    printf("empty\n");
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
    if (status_json(cfg, st) != 0)
      ret = 1;
  } else {
    status_text(cfg, st);
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

/* --- progress ---------------------------------------------------------------------- */

void stg_cli_progress_init(stg_cli_progress_t *p) {
  p->tty = isatty(STDERR_FILENO) != 0;
  p->drawn = false;
  p->last_line = 0;
}

void stg_cli_progress_show(stg_cli_progress_t *p, const char *what, uint64_t bytes,
                           uint64_t total, double rate) {
  char line[256];
  stg_agentfetch_format_progress(bytes, total, rate, line, sizeof line);
  if (p->tty) {
    char bar[32];
    int w = 24, fill = total > 0 ? (int)((bytes >= total ? total : bytes) * (uint64_t)w / total)
                                  : 0;
    for (int i = 0; i < w; i++)
      bar[i] = i < fill ? '#' : (total > 0 ? '.' : ' ');
    bar[w] = '\0';
    fprintf(stderr, "\r\033[K%s [%s] %s", what, bar, line);
    p->drawn = true;
  } else {
    uint64_t now = uv_hrtime();
    if (p->last_line != 0 && now - p->last_line < 1000000000u)
      return;
    p->last_line = now;
    fprintf(stderr, "%s: %s\n", what, line);
  }
  fflush(stderr);
}

void stg_cli_progress_end(stg_cli_progress_t *p) {
  if (p->drawn)
    fputc('\n', stderr);
  p->drawn = false;
}

/* --- fetch ---------------------------------------------------------------------------- */

typedef struct {
  stg_agentfetch_t af;
  stg_cli_progress_t bar;
  char what[200];
  int status;
} fg_fetch_t;

static void fg_progress(stg_agentfetch_t *af) {
  fg_fetch_t *f = af->data;
  stg_cli_progress_show(&f->bar, f->what, af->bytes, af->total, af->rate);
}

static void fg_failure(stg_agentfetch_t *af, const char *reason, bool will_retry,
                       uint64_t retry_in_ms) {
  fg_fetch_t *f = af->data;
  stg_cli_progress_end(&f->bar);
  char w[32];
  if (will_retry)
    fprintf(stderr, "stigmer: attempt %u failed: %s; retrying in %s\n", af->attempts, reason,
            stg_format_duration(retry_in_ms, w, sizeof w));
  else
    fprintf(stderr, "stigmer: attempt %u failed: %s; giving up\n", af->attempts, reason);
}

static void fg_done(stg_agentfetch_t *af, int status) {
  fg_fetch_t *f = af->data;
  if (status == 0)
    stg_cli_progress_show(&f->bar, f->what, af->bytes, af->total, af->rate);
  stg_cli_progress_end(&f->bar);
  f->status = status;
}

static int cmd_fetch(stg_config_t *cfg, int argc, char **argv) {
  unsigned attempts = 5;
  for (int i = 1; i < argc; i++) {
    const char *v = NULL;
    if (strcmp(argv[i], "--attempts") == 0) {
      if (i + 1 >= argc)
        return stg_cli_usage_error("agent-runner fetch: --attempts needs a number");
      v = argv[++i];
    } else if (strncmp(argv[i], "--attempts=", 11) == 0) {
      v = argv[i] + 11;
    } else {
      return stg_cli_usage_error("agent-runner fetch: unknown argument '%s'", argv[i]);
    }
    char *end;
    unsigned long n = strtoul(v, &end, 10);
    if (*v == '\0' || *end != '\0' || n > 1000000)
      return stg_cli_usage_error("agent-runner fetch: --attempts: '%s' is not a number", v);
    attempts = (unsigned)n;
  }
  stg_agentfetch_plan_t plan;
  char desc[1024];
  int rc = stg_agentfetch_plan(cfg, &plan, desc, sizeof desc);
  if (rc != 0) {
    fprintf(stderr, "stigmer: agent-runner fetch: %s\n", desc);
    return 1;
  }
  rc = stg_agentfetch_install_cached(cfg, &plan, desc, sizeof desc);
  if (rc == 0) {
    printf("%s\n", desc);
    return 0;
  }
  if (rc < 0) {
    fprintf(stderr, "stigmer: agent-runner fetch: %s\n", desc);
    return 1;
  }
  fprintf(stderr, "stigmer: %s; fetching %s\n", desc, plan.url);
  signal(SIGPIPE, SIG_IGN);
  uv_loop_t loop;
  rc = uv_loop_init(&loop);
  if (rc != 0) {
    fprintf(stderr, "stigmer: agent-runner fetch: %s\n", uv_strerror(rc));
    return 1;
  }
  fg_fetch_t *f = calloc(1, sizeof *f);
  if (f == NULL) {
    uv_loop_close(&loop);
    return 1;
  }
  stg_cli_progress_init(&f->bar);
  snprintf(f->what, sizeof f->what, "agent-runner %s", plan.version);
  stg_agentfetch_options_t fo;
  memset(&fo, 0, sizeof fo);
  fo.cfg = cfg;
  fo.plan = &plan;
  fo.max_attempts = attempts;
  fo.progress = fg_progress;
  fo.failure = fg_failure;
  fo.done = fg_done;
  fo.data = f;
  int ret = 1;
  rc = stg_agentfetch_start(&loop, &f->af, &fo, desc, sizeof desc);
  if (rc != 0) {
    fprintf(stderr, "stigmer: agent-runner fetch: %s\n", desc);
    goto out;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  if (f->status != 0) {
    fprintf(stderr, "stigmer: agent-runner fetch: %s: %s\n", plan.url,
            f->af.last_error[0] ? f->af.last_error : uv_strerror(f->status));
    goto out;
  }
  rc = stg_agentfetch_install_cached(cfg, &plan, desc, sizeof desc);
  if (rc != 0) {
    fprintf(stderr, "stigmer: agent-runner fetch: %s\n", desc);
    goto out;
  }
  printf("downloaded and verified %s; %s\n", plan.url, desc);
  printf("a running daemon uses it from the agent-runner's next start "
         "(stigmer daemon restart agent-runner)\n");
  ret = 0;
out:
  uv_loop_close(&loop);
  free(f);
  return ret;
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
      {"extract", cmd_extract}, {"fetch", cmd_fetch},   {"install", cmd_install},
      {"path", cmd_path},       {"reset", cmd_reset},   {"status", cmd_status},
  };
  for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
    if (strcmp(subs[i].name, sub) == 0)
      return subs[i].fn(stg_cli_config(cli), argc - 1, argv + 1);
  return stg_cli_usage_error("agent-runner: unknown command '%s'", sub);
}
