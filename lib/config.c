#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>
#include <jansson.h>
#include <uv.h>

#include "parse.h"

/* --- components -------------------------------------------------------------- */

static const char *const component_names[STG_COMP_COUNT] = {
    "server", "workflow-runner", "agent-runner"};

const char *stg_component_name(stg_component_id_t id) {
  if ((unsigned)id < STG_COMP_COUNT)
    return component_names[id];
  return "?";
}

int stg_component_lookup(const char *name) {
  for (int i = 0; i < STG_COMP_COUNT; i++)
    if (strcmp(component_names[i], name) == 0)
      return i;
  return -1;
}

/* --- the key table ----------------------------------------------------------- */

typedef enum { T_BOOL, T_DURATION, T_SIZE, T_INT, T_STRING, T_LEVEL, T_ENUM, T_ADDR } ktype_t;

typedef struct {
  const char *section; /* "component" for the per-component keys */
  const char *key;
  ktype_t type;
  size_t offset;       /* in stg_config_t, or stg_component_config_t */
  const char *def;     /* default as text; NULL: inherited */
  const char *inherit; /* "section.key" a component key inherits */
  int64_t min, max;    /* T_INT range */
  const char *choices; /* T_ENUM: "a|b" */
} cfgkey_t;

#define G(f) offsetof(stg_config_t, f)
#define C(f) offsetof(stg_component_config_t, f)

#define DEFAULT_URL                                                            \
  "https://github.com/stigmer/stigmer/releases/download/v{version}/"           \
  "agent-runner-{version}-{os}-{arch}"

static const cfgkey_t keys[] = {
    {"log", "level", T_LEVEL, G(log.level), "info", NULL, 0, 0, NULL},
    {"server", "listen", T_ADDR, G(server.listen), "127.0.0.1:7234", NULL, 0, 0, NULL},
    {"server", "max_connections", T_INT, G(server.max_connections), "1024", NULL, 1, 1000000, NULL},
    {"server", "idle_timeout", T_DURATION, G(server.idle_timeout_ms), "30s", NULL, 0, 0, NULL},
    {"server", "lease", T_DURATION, G(server.lease_ms), "30s", NULL, 0, 0, NULL},
    {"supervisor", "stop_timeout", T_DURATION, G(supervisor.stop_timeout_ms), "10s", NULL, 0, 0, NULL},
    {"supervisor", "ready_timeout", T_DURATION, G(supervisor.ready_timeout_ms), "30s", NULL, 0, 0, NULL},
    {"supervisor", "settle", T_DURATION, G(supervisor.settle_ms), "1s", NULL, 0, 0, NULL},
    {"supervisor", "watchdog", T_DURATION, G(supervisor.watchdog_ms), "0", NULL, 0, 0, NULL},
    {"restart", "backoff_initial", T_DURATION, G(restart.backoff_initial_ms), "100ms", NULL, 0, 0, NULL},
    {"restart", "backoff_max", T_DURATION, G(restart.backoff_max_ms), "30s", NULL, 0, 0, NULL},
    {"restart", "min_uptime", T_DURATION, G(restart.min_uptime_ms), "10s", NULL, 0, 0, NULL},
    {"restart", "max_restarts", T_INT, G(restart.max_restarts), "10", NULL, 0, 1000000, NULL},
    {"restart", "restart_window", T_DURATION, G(restart.restart_window_ms), "5m", NULL, 0, 0, NULL},
    {"logs", "max_size", T_SIZE, G(logs.max_size), "10MiB", NULL, 0, 0, NULL},
    {"logs", "keep", T_INT, G(logs.keep), "5", NULL, 1, 1000, NULL},
    {"agent-runner", "path", T_STRING, G(agent_runner.path), "", NULL, 0, 0, NULL},
    {"agent-runner", "url", T_STRING, G(agent_runner.url), DEFAULT_URL, NULL, 0, 0, NULL},
    {"agent-runner", "version", T_STRING, G(agent_runner.version), "", NULL, 0, 0, NULL},
    {"agent-runner", "sha256", T_STRING, G(agent_runner.sha256), "", NULL, 0, 0, NULL},
    {"agent-runner", "public_key", T_STRING, G(agent_runner.public_key), "", NULL, 0, 0, NULL},
    {"agent-runner", "allow_http", T_BOOL, G(agent_runner.allow_http), "no", NULL, 0, 0, NULL},
    {"agent-runner", "ca_file", T_STRING, G(agent_runner.ca_file), "", NULL, 0, 0, NULL},
    {"agent-runner", "max_size", T_SIZE, G(agent_runner.max_size), "512MiB", NULL, 0, 0, NULL},
    {"agent-runner", "provider", T_ENUM, G(agent_runner.provider), "ollama", NULL, 0, 0, "ollama|openai"},
    {"agent-runner", "base_url", T_STRING, G(agent_runner.base_url), "", NULL, 0, 0, NULL},
    {"agent-runner", "model", T_STRING, G(agent_runner.model), "qwen2.5-coder:7b", NULL, 0, 0, NULL},
    {"workflow-runner", "concurrency", T_INT, G(workflow_runner.concurrency), "4", NULL, 1, 256, NULL},
    /* per component: [component.NAME] */
    {"component", "enabled", T_BOOL, C(enabled), "yes", NULL, 0, 0, NULL},
    {"component", "notify", T_BOOL, C(notify), "yes", NULL, 0, 0, NULL},
    {"component", "settle", T_DURATION, C(settle_ms), NULL, "supervisor.settle", 0, 0, NULL},
    {"component", "ready_timeout", T_DURATION, C(ready_timeout_ms), NULL, "supervisor.ready_timeout", 0, 0, NULL},
    {"component", "stop_timeout", T_DURATION, C(stop_timeout_ms), NULL, "supervisor.stop_timeout", 0, 0, NULL},
    {"component", "watchdog", T_DURATION, C(watchdog_ms), NULL, "supervisor.watchdog", 0, 0, NULL},
    {"component", "backoff_initial", T_DURATION, C(backoff_initial_ms), NULL, "restart.backoff_initial", 0, 0, NULL},
    {"component", "backoff_max", T_DURATION, C(backoff_max_ms), NULL, "restart.backoff_max", 0, 0, NULL},
    {"component", "min_uptime", T_DURATION, C(min_uptime_ms), NULL, "restart.min_uptime", 0, 0, NULL},
    {"component", "max_restarts", T_INT, C(max_restarts), NULL, "restart.max_restarts", 0, 1000000, NULL},
    {"component", "restart_window", T_DURATION, C(restart_window_ms), NULL, "restart.restart_window", 0, 0, NULL},
};

#define N_KEYS (sizeof keys / sizeof keys[0])

static size_t first_component_key(void) {
  size_t i = 0;
  while (i < N_KEYS && strcmp(keys[i].section, "component") != 0)
    i++;
  return i;
}

/* Slots: one per global key, one per (component, component key), then one
 * per possible env.* entry of each component. */
typedef struct stg_config_origin_s {
  stg_origin_kind_t kind;
  int line;
  char env[96]; /* the variable's name, for STG_ORIGIN_ENV */
} origin_t;

static size_t n_global(void) { return first_component_key(); }
static size_t n_comp_keys(void) { return N_KEYS - first_component_key(); }
static size_t n_slots(void) {
  return n_global() + STG_COMP_COUNT * n_comp_keys() +
         STG_COMP_COUNT * STG_CONFIG_MAX_ENV;
}

static size_t slot_of(size_t key, int comp) {
  if (comp < 0)
    return key;
  return n_global() + (size_t)comp * n_comp_keys() + (key - n_global());
}

static size_t env_slot(int comp, unsigned i) {
  return n_global() + STG_COMP_COUNT * n_comp_keys() +
         (size_t)comp * STG_CONFIG_MAX_ENV + i;
}

static void *field(stg_config_t *cfg, size_t key, int comp) {
  char *base = comp < 0 ? (char *)cfg : (char *)&cfg->component[comp];
  return base + keys[key].offset;
}

static const void *cfield(const stg_config_t *cfg, size_t key, int comp) {
  return field((stg_config_t *)cfg, key, comp);
}

static int find_key(const char *section, const char *key) {
  for (size_t i = 0; i < N_KEYS; i++)
    if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].key, key) == 0)
      return (int)i;
  return -1;
}

static const char *expected(const cfgkey_t *k, char *buf, size_t len) {
  switch (k->type) {
  case T_BOOL:
    return "expected yes or no";
  case T_DURATION:
    return "expected a duration such as 250ms, 5s, 2m or 1h";
  case T_SIZE:
    return "expected a size such as 512KiB, 10MiB or 1GiB";
  case T_INT:
    snprintf(buf, len, "expected a whole number from %lld to %lld",
             (long long)k->min, (long long)k->max);
    return buf;
  case T_LEVEL:
    return "expected one of error, warn, info, debug";
  case T_ENUM:
    snprintf(buf, len, "expected one of %s", k->choices);
    for (char *p = buf; *p; p++)
      if (*p == '|')
        *p = ',';
    return buf;
  case T_ADDR:
    return "expected host:port, such as 127.0.0.1:7234";
  case T_STRING:
    return "expected text";
  }
  return "?";
}

static int valid_addr(const char *s) {
  const char *colon = strrchr(s, ':');
  if (colon == NULL || colon == s)
    return 0;
  int64_t port;
  if (stg_parse_int(colon + 1, 0, 65535, &port) != 0)
    return 0;
  char host[256];
  size_t hl = (size_t)(colon - s);
  if (hl >= sizeof host)
    return 0;
  memcpy(host, s, hl);
  host[hl] = '\0';
  if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
    host[hl - 1] = '\0';
    struct sockaddr_in6 a6;
    return uv_ip6_addr(host + 1, 0, &a6) == 0;
  }
  struct sockaddr_in a4;
  if (uv_ip4_addr(host, 0, &a4) == 0)
    return 1;
  return strcmp(host, "localhost") == 0;
}

/* Parse value into the field. Returns 0 or UV_EINVAL/UV_ERANGE. */
static int assign(stg_config_t *cfg, size_t key, int comp, const char *value) {
  const cfgkey_t *k = &keys[key];
  void *f = field(cfg, key, comp);
  switch (k->type) {
  case T_BOOL:
    return stg_parse_bool(value, (bool *)f);
  case T_DURATION:
    return stg_parse_duration(value, (uint64_t *)f);
  case T_SIZE:
    return stg_parse_size(value, (uint64_t *)f);
  case T_INT:
    return stg_parse_int(value, k->min, k->max, (int64_t *)f);
  case T_LEVEL:
    return stg_log_level_parse(value, (stg_log_level_t *)f);
  case T_ENUM: {
    size_t vl = strlen(value);
    const char *p = k->choices;
    int ok = 0;
    while (*p) {
      const char *bar = strchr(p, '|');
      size_t l = bar ? (size_t)(bar - p) : strlen(p);
      if (l == vl && strncmp(p, value, l) == 0)
        ok = 1;
      p += l + (bar ? 1 : 0);
    }
    if (!ok)
      return UV_EINVAL;
  }
    /* fall through */
  case T_ADDR:
    if (k->type == T_ADDR && !valid_addr(value))
      return UV_EINVAL;
    /* fall through */
  case T_STRING: {
    char *dup = strdup(value);
    if (dup == NULL)
      return UV_ENOMEM;
    char **s = (char **)f;
    free(*s);
    *s = dup;
    return 0;
  }
  }
  return UV_EINVAL;
}

/* --- init ----------------------------------------------------------------------- */

int stg_config_init(stg_config_t *cfg, const char *home) {
  memset(cfg, 0, sizeof *cfg);
  char buf[4096];
  if (home == NULL || *home == '\0')
    home = getenv("STIGMER_HOME");
  if (home == NULL || *home == '\0') {
    const char *h = getenv("HOME");
    if (h == NULL || *h == '\0') {
      struct passwd *pw = getpwuid(getuid());
      h = pw ? pw->pw_dir : NULL;
    }
    if (h == NULL)
      return UV_ENOENT;
    snprintf(buf, sizeof buf, "%s/.stigmer", h);
    home = buf;
  }
  cfg->home = strdup(home);
  cfg->origins = calloc(n_slots(), sizeof(origin_t));
  if (cfg->home == NULL || cfg->origins == NULL)
    return UV_ENOMEM;
  /* Strip trailing slashes, keeping "/". */
  size_t hl = strlen(cfg->home);
  while (hl > 1 && cfg->home[hl - 1] == '/')
    cfg->home[--hl] = '\0';
  char path[4096];
  snprintf(path, sizeof path, "%s/config.ini", cfg->home);
  cfg->file = strdup(path);
  if (cfg->file == NULL)
    return UV_ENOMEM;
  for (size_t i = 0; i < N_KEYS; i++) {
    if (keys[i].def == NULL)
      continue;
    if (strcmp(keys[i].section, "component") == 0) {
      for (int c = 0; c < STG_COMP_COUNT; c++) {
        int rc = assign(cfg, i, c, keys[i].def);
        if (rc)
          return rc;
      }
    } else {
      int rc = assign(cfg, i, -1, keys[i].def);
      if (rc)
        return rc;
    }
  }
  stg_config_finish(cfg);
  return 0;
}

void stg_config_finish(stg_config_t *cfg) {
  for (size_t i = n_global(); i < N_KEYS; i++) {
    if (keys[i].inherit == NULL)
      continue;
    char sec[64];
    const char *dot = strchr(keys[i].inherit, '.');
    snprintf(sec, sizeof sec, "%.*s", (int)(dot - keys[i].inherit), keys[i].inherit);
    int g = find_key(sec, dot + 1);
    for (int c = 0; c < STG_COMP_COUNT; c++) {
      origin_t *o = &cfg->origins[slot_of(i, c)];
      if (o->kind != STG_ORIGIN_DEFAULT && o->kind != STG_ORIGIN_INHERITED)
        continue;
      size_t sz = keys[i].type == T_INT ? sizeof(int64_t) : sizeof(uint64_t);
      memcpy(field(cfg, i, c), field(cfg, (size_t)g, -1), sz);
      o->kind = STG_ORIGIN_INHERITED;
    }
  }
}

/* --- errors and warnings ---------------------------------------------------------- */

typedef struct {
  stg_config_t *cfg;
  char *err;
  size_t errlen;
  int rc;     /* first error */
  int line;   /* line being parsed */
  int toolong; /* the reader saw an over-long line */
} load_ctx_t;

static void set_err(load_ctx_t *ctx, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(load_ctx_t *ctx, int rc, const char *fmt, ...) {
  if (ctx->rc)
    return; /* keep the first */
  ctx->rc = rc;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->err, ctx->errlen, fmt, ap);
  va_end(ap);
}

/* Split "component.NAME" into the component index; -1 if not one. */
static int component_section(const char *section, int *comp) {
  if (strncmp(section, "component.", 10) != 0)
    return 0;
  *comp = stg_component_lookup(section + 10);
  return 1;
}

static const char *known_section(const char *s) {
  for (size_t i = 0; i < N_KEYS; i++)
    if (strcmp(keys[i].section, s) == 0 && strcmp(s, "component") != 0)
      return keys[i].section;
  return NULL;
}

/* Apply one value. where: "file:line" or "environment NAME" for messages. */
static int apply(load_ctx_t *ctx, const char *section, const char *key,
                 const char *value, stg_origin_kind_t kind, int line,
                 const char *envname, const char *where) {
  stg_config_t *cfg = ctx->cfg;
  int comp = -1;
  const char *tsec = section;
  if (component_section(section, &comp)) {
    if (comp < 0) {
      stg_warn("%s: unknown component in section [%s] (known: server, "
               "workflow-runner, agent-runner); ignored",
               where, section);
      return 0;
    }
    tsec = "component";
    if (strncmp(key, "env.", 4) == 0) {
      const char *name = key + 4;
      int ok = *name != '\0' && !isdigit((unsigned char)*name);
      for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_')
          ok = 0;
      if (!ok) {
        char m[256];
        snprintf(m, sizeof m, "[%s] %s: expected env.NAME with NAME made of "
                 "letters, digits and _", section, key);
        set_err(ctx, UV_EINVAL, "%s: %s", where, m);
        return UV_EINVAL;
      }
      stg_component_config_t *cc = &cfg->component[comp];
      size_t nl = strlen(name);
      unsigned i;
      for (i = 0; i < cc->n_env; i++)
        if (strncmp(cc->env[i], name, nl) == 0 && cc->env[i][nl] == '=')
          break;
      if (i == cc->n_env) {
        if (cc->n_env == STG_CONFIG_MAX_ENV) {
          set_err(ctx, UV_ERANGE, "%s: [%s] %s: more than %d env.* keys", where,
                  section, key, STG_CONFIG_MAX_ENV);
          return UV_ERANGE;
        }
        cc->n_env++;
      }
      size_t len = nl + 1 + strlen(value) + 1;
      char *s = malloc(len);
      if (s == NULL)
        return UV_ENOMEM;
      snprintf(s, len, "%s=%s", name, value);
      free(cc->env[i]);
      cc->env[i] = s;
      origin_t *o = &cfg->origins[env_slot(comp, i)];
      o->kind = kind;
      o->line = line;
      snprintf(o->env, sizeof o->env, "%s", envname ? envname : "");
      return 0;
    }
  } else if (known_section(section) == NULL) {
    stg_warn("%s: unknown section [%s]; ignored", where, section);
    return 0;
  }
  int k = find_key(tsec, key);
  if (k < 0) {
    /* A known key in the wrong section: say where it belongs. */
    const char *hint = NULL;
    for (size_t i = 0; i < N_KEYS && hint == NULL; i++)
      if (strcmp(keys[i].key, key) == 0 && strcmp(keys[i].section, section) != 0)
        hint = keys[i].section;
    if (hint && strcmp(hint, "component") == 0)
      hint = "component.NAME";
    if (hint)
      stg_warn("%s: unknown key '%s' in [%s] (it belongs in [%s]); ignored",
               where, key, section, hint);
    else
      stg_warn("%s: unknown key '%s' in [%s]; ignored", where, key, section);
    return 0;
  }
  int rc = assign(cfg, (size_t)k, comp, value);
  if (rc) {
    char eb[128];
    set_err(ctx, rc, "%s: [%s] %s: %s, got '%s'%s", where, section, key,
            expected(&keys[k], eb, sizeof eb), value,
            rc == UV_ERANGE ? " (out of range)" : "");
    return rc;
  }
  origin_t *o = &cfg->origins[slot_of((size_t)k, comp)];
  o->kind = kind;
  o->line = line;
  snprintf(o->env, sizeof o->env, "%s", envname ? envname : "");
  return 0;
}

/* --- the file ----------------------------------------------------------------------- */

typedef struct {
  FILE *fp;
  load_ctx_t *ctx;
} reader_t;

/* inih reads through this so that we know the line number (Debian's inih
 * is built without INI_HANDLER_LINENO) and can refuse over-long lines
 * instead of letting inih split them. */
static char *read_line(char *str, int num, void *stream) {
  reader_t *r = stream;
  char *line = NULL;
  size_t cap = 0;
  ssize_t n = getline(&line, &cap, r->fp);
  if (n < 0) {
    free(line);
    return NULL;
  }
  r->ctx->line++;
  if (n >= num) {
    set_err(r->ctx, UV_EINVAL, "%s:%d: line longer than %d characters",
            r->ctx->cfg->file, r->ctx->line, num - 2);
    str[0] = '\n';
    str[1] = '\0';
  } else {
    memcpy(str, line, (size_t)n + 1);
  }
  free(line);
  return str;
}

static int on_value(void *user, const char *section, const char *name,
                    const char *value) {
  load_ctx_t *ctx = user;
  char where[4200];
  snprintf(where, sizeof where, "%s:%d", ctx->cfg->file, ctx->line);
  if (*section == '\0') {
    stg_warn("%s: key '%s' outside any section; ignored", where, name);
    return 1;
  }
  apply(ctx, section, name, value, STG_ORIGIN_FILE, ctx->line, NULL, where);
  return 1;
}

/* --- the environment ------------------------------------------------------------------ */

static void env_name(const char *section, const char *key, char *buf, size_t len) {
  snprintf(buf, len, "STIGMER_%s_%s", section, key);
  for (char *p = buf; *p; p++) {
    if (*p == '-' || *p == '.')
      *p = '_';
    else
      *p = (char)toupper((unsigned char)*p);
  }
}

static void load_env(load_ctx_t *ctx) {
  char name[128];
  for (size_t i = 0; i < N_KEYS; i++) {
    if (strcmp(keys[i].section, "component") == 0) {
      for (int c = 0; c < STG_COMP_COUNT; c++) {
        char sec[64];
        snprintf(sec, sizeof sec, "component.%s", component_names[c]);
        env_name(sec, keys[i].key, name, sizeof name);
        const char *v = getenv(name);
        if (v == NULL)
          continue;
        char where[160];
        snprintf(where, sizeof where, "environment %s", name);
        apply(ctx, sec, keys[i].key, v, STG_ORIGIN_ENV, 0, name, where);
      }
    } else {
      env_name(keys[i].section, keys[i].key, name, sizeof name);
      const char *v = getenv(name);
      if (v == NULL)
        continue;
      char where[160];
      snprintf(where, sizeof where, "environment %s", name);
      apply(ctx, keys[i].section, keys[i].key, v, STG_ORIGIN_ENV, 0, name, where);
    }
  }
}

int stg_config_load(stg_config_t *cfg, char *err, size_t errlen) {
  load_ctx_t ctx = {cfg, err, errlen, 0, 0, 0};
  if (errlen)
    err[0] = '\0';
  FILE *fp = fopen(cfg->file, "re");
  if (fp == NULL) {
    if (errno != ENOENT) {
      int e = errno;
      set_err(&ctx, -e, "open %s: %s", cfg->file, strerror(e));
      return ctx.rc;
    }
  } else {
    struct stat st;
    if (fstat(fileno(fp), &st) == 0 && !S_ISREG(st.st_mode)) {
      fclose(fp);
      set_err(&ctx, UV_EINVAL, "%s: not a regular file", cfg->file);
      return ctx.rc;
    }
    cfg->file_found = true;
    reader_t r = {fp, &ctx};
    int rc = ini_parse_stream(read_line, &r, on_value, &ctx);
    fclose(fp);
    if (rc > 0)
      set_err(&ctx, UV_EINVAL, "%s:%d: syntax error (expected [section] or "
              "key = value)", cfg->file, rc);
    else if (rc < 0)
      set_err(&ctx, UV_ENOMEM, "%s: cannot parse (out of memory)", cfg->file);
  }
  if (ctx.rc == 0)
    load_env(&ctx);
  stg_config_finish(cfg);
  return ctx.rc;
}

int stg_config_set(stg_config_t *cfg, const char *dotted, const char *value,
                   char *err, size_t errlen) {
  load_ctx_t ctx = {cfg, err, errlen, 0, 0, 0};
  char sec[128];
  const char *key;
  /* component.NAME.key[.more] or section.key */
  if (strncmp(dotted, "component.", 10) == 0) {
    const char *dot = strchr(dotted + 10, '.');
    if (dot == NULL) {
      snprintf(err, errlen, "--set %s: expected component.NAME.key=value", dotted);
      return UV_EINVAL;
    }
    snprintf(sec, sizeof sec, "%.*s", (int)(dot - dotted), dotted);
    key = dot + 1;
  } else {
    const char *dot = strchr(dotted, '.');
    if (dot == NULL) {
      snprintf(err, errlen, "--set %s: expected section.key=value", dotted);
      return UV_EINVAL;
    }
    snprintf(sec, sizeof sec, "%.*s", (int)(dot - dotted), dotted);
    key = dot + 1;
  }
  int comp;
  if (!(component_section(sec, &comp) && comp >= 0) && known_section(sec) == NULL) {
    snprintf(err, errlen, "--set %s: unknown section [%s]", dotted, sec);
    return UV_EINVAL;
  }
  if (strcmp(sec, "component") != 0 && strncmp(key, "env.", 4) != 0 &&
      find_key(strncmp(sec, "component.", 10) == 0 ? "component" : sec, key) < 0) {
    snprintf(err, errlen, "--set %s: unknown key '%s' in [%s]", dotted, key, sec);
    return UV_EINVAL;
  }
  char where[256];
  snprintf(where, sizeof where, "--set %s", dotted);
  apply(&ctx, sec, key, value, STG_ORIGIN_FLAG, 0, NULL, where);
  stg_config_finish(cfg);
  return ctx.rc;
}

/* --- show --------------------------------------------------------------------------- */

static void format_value(const stg_config_t *cfg, size_t k, int comp, char *buf,
                         size_t len) {
  const void *f = cfield(cfg, k, comp);
  switch (keys[k].type) {
  case T_BOOL:
    snprintf(buf, len, "%s", *(const bool *)f ? "yes" : "no");
    break;
  case T_DURATION:
    stg_format_duration(*(const uint64_t *)f, buf, (unsigned)len);
    break;
  case T_SIZE:
    stg_format_size(*(const uint64_t *)f, buf, (unsigned)len);
    break;
  case T_INT:
    snprintf(buf, len, "%lld", (long long)*(const int64_t *)f);
    break;
  case T_LEVEL:
    snprintf(buf, len, "%s", stg_log_level_name(*(const stg_log_level_t *)f));
    break;
  default: {
    const char *s = *(char *const *)f;
    snprintf(buf, len, "%s", s ? s : "");
  }
  }
}

static void format_origin(const stg_config_t *cfg, const origin_t *o,
                          const char *inherit, char *buf, size_t len) {
  switch (o->kind) {
  case STG_ORIGIN_DEFAULT:
    snprintf(buf, len, "default");
    break;
  case STG_ORIGIN_INHERITED: {
    const char *dot = inherit ? strchr(inherit, '.') : NULL;
    if (dot)
      snprintf(buf, len, "from [%.*s]", (int)(dot - inherit), inherit);
    else
      snprintf(buf, len, "inherited");
    break;
  }
  case STG_ORIGIN_FILE:
    snprintf(buf, len, "%s:%d", cfg->file, o->line);
    break;
  case STG_ORIGIN_ENV:
    snprintf(buf, len, "env %s", o->env);
    break;
  case STG_ORIGIN_FLAG:
    snprintf(buf, len, "flag");
    break;
  }
}

typedef void (*show_fn)(void *user, const char *section, const char *key,
                        const char *value, const char *origin);

static void walk(const stg_config_t *cfg, show_fn fn, void *user) {
  char val[1024], org[4200];
  for (size_t k = 0; k < n_global(); k++) {
    format_value(cfg, k, -1, val, sizeof val);
    format_origin(cfg, &cfg->origins[slot_of(k, -1)], NULL, org, sizeof org);
    fn(user, keys[k].section, keys[k].key, val, org);
  }
  for (int c = 0; c < STG_COMP_COUNT; c++) {
    char sec[64];
    snprintf(sec, sizeof sec, "component.%s", component_names[c]);
    for (size_t k = n_global(); k < N_KEYS; k++) {
      format_value(cfg, k, c, val, sizeof val);
      format_origin(cfg, &cfg->origins[slot_of(k, c)], keys[k].inherit, org, sizeof org);
      fn(user, sec, keys[k].key, val, org);
    }
    const stg_component_config_t *cc = &cfg->component[c];
    for (unsigned i = 0; i < cc->n_env; i++) {
      char key[256];
      const char *eq = strchr(cc->env[i], '=');
      snprintf(key, sizeof key, "env.%.*s", (int)(eq - cc->env[i]), cc->env[i]);
      format_origin(cfg, &cfg->origins[env_slot(c, i)], NULL, org, sizeof org);
      fn(user, sec, key, eq + 1, org);
    }
  }
}

typedef struct {
  FILE *out;
  char section[64];
} show_text_t;

static void show_text(void *user, const char *section, const char *key,
                      const char *value, const char *origin) {
  show_text_t *st = user;
  if (strcmp(st->section, section) != 0) {
    fprintf(st->out, "%s[%s]\n", st->section[0] ? "\n" : "", section);
    snprintf(st->section, sizeof st->section, "%s", section);
  }
  char kv[1200];
  snprintf(kv, sizeof kv, "%s = %s", key, value);
  fprintf(st->out, "%-44s ; %s\n", kv, origin);
}

void stg_config_show(const stg_config_t *cfg, FILE *out) {
  show_text_t st = {out, ""};
  fprintf(out, "; STIGMER_HOME=%s\n; config file: %s%s\n\n", cfg->home, cfg->file,
          cfg->file_found ? "" : " (not present: defaults)");
  walk(cfg, show_text, &st);
}

static void show_json(void *user, const char *section, const char *key,
                      const char *value, const char *origin) {
  json_t *root = user;
  json_t *sec = json_object_get(root, section);
  if (sec == NULL) {
    sec = json_object();
    json_object_set_new(root, section, sec);
  }
  json_object_set_new(sec, key, json_pack("{s:s, s:s}", "value", value, "origin", origin));
}

char *stg_config_show_json(const stg_config_t *cfg) {
  json_t *root = json_object();
  json_t *sections = json_object();
  walk(cfg, show_json, sections);
  json_object_set_new(root, "home", json_string(cfg->home));
  json_object_set_new(root, "file", json_string(cfg->file));
  json_object_set_new(root, "file_found", json_boolean(cfg->file_found));
  json_object_set_new(root, "sections", sections);
  char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(root);
  return s;
}

int stg_config_load_all(stg_config_t *cfg, const stg_config_overrides_t *o, char *err,
                        size_t errlen) {
  int rc = stg_config_init(cfg, o->home);
  if (rc != 0) {
    snprintf(err, errlen, "cannot find a home directory: set STIGMER_HOME or use --home");
    stg_config_free(cfg);
    return rc;
  }
  rc = stg_config_load(cfg, err, errlen);
  for (unsigned i = 0; rc == 0 && i < o->n_sets; i++) {
    const char *eq = strchr(o->sets[i], '=');
    if (eq == NULL) {
      snprintf(err, errlen, "--set: expected SECTION.KEY=VALUE, got '%s'", o->sets[i]);
      rc = UV_EINVAL;
      break;
    }
    char key[256];
    snprintf(key, sizeof key, "%.*s", (int)(eq - o->sets[i]), o->sets[i]);
    rc = stg_config_set(cfg, key, eq + 1, err, errlen);
  }
  if (rc == 0 && o->log_level)
    rc = stg_config_set(cfg, "log.level", o->log_level, err, errlen);
  if (rc != 0)
    stg_config_free(cfg);
  return rc;
}

void stg_config_free(stg_config_t *cfg) {
  for (size_t k = 0; k < N_KEYS; k++) {
    ktype_t t = keys[k].type;
    if (t != T_STRING && t != T_ENUM && t != T_ADDR)
      continue;
    if (strcmp(keys[k].section, "component") == 0) {
      for (int c = 0; c < STG_COMP_COUNT; c++) {
        char **s = field(cfg, k, c);
        free(*s);
        *s = NULL;
      }
    } else {
      char **s = field(cfg, k, -1);
      free(*s);
      *s = NULL;
    }
  }
  for (int c = 0; c < STG_COMP_COUNT; c++) {
    for (unsigned i = 0; i < cfg->component[c].n_env; i++)
      free(cfg->component[c].env[i]);
    cfg->component[c].n_env = 0;
  }
  free(cfg->home);
  free(cfg->file);
  free(cfg->origins);
  cfg->home = cfg->file = NULL;
  cfg->origins = NULL;
}

char *stg_config_path(const stg_config_t *cfg, const char *rel, char *buf,
                      size_t len) {
  int n = snprintf(buf, len, "%s/%s", cfg->home, rel);
  if (n < 0 || (size_t)n >= len)
    return NULL;
  return buf;
}
