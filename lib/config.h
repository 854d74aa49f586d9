/* The effective configuration: built-in defaults, then
 * $STIGMER_HOME/config.ini, then STIGMER_<SECTION>_<KEY> environment
 * variables, then command-line flags. Every key, its default and its meaning
 * are in docs/config.md; the table in config.c is the single source.
 */
#ifndef STG_CONFIG_H
#define STG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"

typedef enum {
  STG_COMP_SERVER = 0,
  STG_COMP_WORKFLOW_RUNNER = 1,
  STG_COMP_AGENT_RUNNER = 2,
  STG_COMP_COUNT = 3
} stg_component_id_t;

/* "server", "workflow-runner", "agent-runner". */
const char *stg_component_name(stg_component_id_t id);
/* Returns the id, or -1 for an unknown name. */
int stg_component_lookup(const char *name);

#define STG_CONFIG_MAX_ENV 32

/* Per-component policy. Unset keys inherit [supervisor] and [restart]. */
typedef struct {
  bool enabled;                 /* start this component at all */
  bool notify;                  /* ready on READY=1; else after settle */
  uint64_t settle_ms;           /* alive this long counts as ready (notify=no) */
  uint64_t ready_timeout_ms;    /* not ready by then: killed, a failed start */
  uint64_t stop_timeout_ms;     /* SIGTERM, this long, then SIGKILL */
  uint64_t watchdog_ms;         /* silence after WATCHDOG=1 that kills; 0 off */
  uint64_t backoff_initial_ms;  /* first restart delay */
  uint64_t backoff_max_ms;      /* restart delay cap */
  uint64_t min_uptime_ms;       /* ready this long: next restart immediate */
  int64_t max_restarts;         /* more than this within the window: failed */
  uint64_t restart_window_ms;   /* the window for max_restarts */
  char *env[STG_CONFIG_MAX_ENV]; /* "NAME=value" additions, owned */
  unsigned n_env;
} stg_component_config_t;

typedef struct stg_config_s {
  char *home;        /* $STIGMER_HOME, owned */
  char *file;        /* path of config.ini, owned */
  bool file_found;   /* whether config.ini existed */
  struct {
    stg_log_level_t level;
  } log;
  struct {
    char *listen;              /* host:port */
    int64_t max_connections;
    uint64_t idle_timeout_ms;
    uint64_t lease_ms;
  } server;
  struct {
    uint64_t stop_timeout_ms;
    uint64_t ready_timeout_ms;
    uint64_t settle_ms;
    uint64_t watchdog_ms;
  } supervisor;
  struct {
    uint64_t backoff_initial_ms;
    uint64_t backoff_max_ms;
    uint64_t min_uptime_ms;
    int64_t max_restarts;
    uint64_t restart_window_ms;
  } restart;
  struct {
    uint64_t max_size;
    int64_t keep;
  } logs;
  struct {
    char *path;        /* "" means $STIGMER_HOME/bin/agent-runner */
    char *url;         /* template with {version} {os} {arch} */
    char *version;     /* "" means this build's version */
    char *sha256;      /* pinned digest, "" to fetch <url>.sha256 */
    char *public_key;  /* PEM path; "" means no signature check */
    bool allow_http;
    char *ca_file;
    uint64_t max_size;
    char *provider;    /* "ollama" or "openai" */
    char *base_url;    /* "" means the provider's default */
    char *model;
  } agent_runner;
  struct {
    int64_t concurrency;
  } workflow_runner;
  stg_component_config_t component[STG_COMP_COUNT];

  /* Where each value came from, for `stigmer config show`. */
  struct stg_config_origin_s *origins; /* owned, one per table slot */
} stg_config_t;

typedef enum {
  STG_ORIGIN_DEFAULT = 0,
  STG_ORIGIN_INHERITED, /* a component key taken from [supervisor]/[restart] */
  STG_ORIGIN_FILE,
  STG_ORIGIN_ENV,
  STG_ORIGIN_FLAG
} stg_origin_kind_t;

/* Fill defaults for the given home (NULL: $STIGMER_HOME, else ~/.stigmer).
 * Returns 0 or a negative error. */
int stg_config_init(stg_config_t *cfg, const char *home);

/* Read config.ini (a missing file means defaults) and then the environment.
 * On a bad value returns UV_EINVAL with a message naming the file, line,
 * key and what was expected in err. Unknown sections and keys are logged as
 * warnings with file and line. */
int stg_config_load(stg_config_t *cfg, char *err, size_t errlen);

/* Set "section.key" (e.g. "supervisor.stop_timeout",
 * "component.server.env.FOO") from a command-line flag. */
int stg_config_set(stg_config_t *cfg, const char *dotted, const char *value,
                   char *err, size_t errlen);

/* Resolve inheritance into cfg->component[]; called by load and set. */
void stg_config_finish(stg_config_t *cfg);

/* Print every key, its value and origin. */
void stg_config_show(const stg_config_t *cfg, FILE *out);
/* The same as a JSON object string (caller frees). */
char *stg_config_show_json(const stg_config_t *cfg);

/* What a command line may override, for stg_config_load_all. */
typedef struct {
  const char *home;         /* --home DIR, or NULL for $STIGMER_HOME/~/.stigmer */
  const char *log_level;    /* --log-level LEVEL, or NULL */
  const char *const *sets;  /* "section.key=value" from --set, applied in order */
  unsigned n_sets;          /* how many sets */
} stg_config_overrides_t;

/* init + load + the overrides: the whole configuration of a command. On
 * an error, cfg is freed and err says what (naming file, line and key, or
 * the flag). */
int stg_config_load_all(stg_config_t *cfg, const stg_config_overrides_t *o, char *err,
                        size_t errlen);

void stg_config_free(stg_config_t *cfg);

/* Path helpers: $home/<rel>, written into buf. Return buf or NULL if it
 * does not fit. */
char *stg_config_path(const stg_config_t *cfg, const char *rel, char *buf,
                      size_t len);

#endif
