/* stigmer daemon logs [-f] [-n N] [--since TIME] [--no-color] [component...]
 *
 * With the supervisor running, asks it (the `logs` request of
 * docs/internals/control.md) and prints what it sends; without, reads
 * $STIGMER_HOME/logs/<component>.log and its rotated files. Either way the
 * lines of several components are merged by capture time, each with a
 * "name | " prefix. Format and behaviour: docs/logs.md. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "cli.h"
#include "ctlclient.h"
#include "logread.h"
#include "parse.h"

static const char usage[] =
    "Usage: stigmer daemon logs [-f] [-n N] [--since TIME] [--no-color] [COMPONENT...]\n"
    "\n"
    "Print the logs of the stack's components, merged by the time each line\n"
    "was captured, each line prefixed with its component's name.\n"
    "COMPONENT is server, workflow-runner, agent-runner or supervisor\n"
    "(default: all of them).\n"
    "\n"
    "  -f, --follow      keep printing new lines until the supervisor stops\n"
    "                    or Ctrl-C (needs a running supervisor)\n"
    "  -n, --tail N      the last N lines of each component (default 100;\n"
    "                    all of them with --since)\n"
    "  --since TIME      lines captured at or after TIME: 2026-11-21T05:39:11Z,\n"
    "                    2026-11-21 05:39, or a duration ago: 10m, 1h30m\n"
    "  --no-color        no colours (also when NO_COLOR is set, or stdout is\n"
    "                    not a terminal)\n"
    "\n"
    "Without a running supervisor the lines come from $STIGMER_HOME/logs.\n"
    "Exit status: 0 success, 1 failure, 2 usage error.\n";

static const char *const known[] = {"server", "workflow-runner", "agent-runner",
                                    "supervisor"};
#define N_KNOWN (sizeof known / sizeof known[0])
#define ALL_LINES 1000000 /* "all" when asking the supervisor; its memory caps it */

typedef struct {
  bool follow;
  int64_t tail;         /* -1: not given */
  uint64_t since_us;    /* 0: none */
  bool color;
  const char *names[N_KNOWN];
  size_t n_names;       /* 0: all */
  int width;            /* of the name column */
} opts_t;

static const char *color_of(const char *name) {
  static const char *const fixed[] = {"36", "35", "33", "32"}; /* order of known[] */
  static const char *const others[] = {"34", "96", "95", "93", "92", "94"};
  for (size_t i = 0; i < N_KNOWN; i++)
    if (strcmp(name, known[i]) == 0)
      return fixed[i];
  unsigned h = 5381;
  for (const char *p = name; *p; p++)
    h = h * 33 + (unsigned char)*p;
  return others[h % (sizeof others / sizeof others[0])];
}

static void print_line(opts_t *o, const char *comp, const char *text, size_t len) {
  int w = (int)strlen(comp);
  if (w > o->width)
    o->width = w;
  if (o->color)
    printf("\033[%sm%-*s\033[0m | ", color_of(comp), o->width, comp);
  else
    printf("%-*s | ", o->width, comp);
  fwrite(text, 1, len, stdout);
  putchar('\n');
}

/* --- from the files ------------------------------------------------------------ */

static int from_files(const stg_config_t *cfg, opts_t *o) {
  char dir[4096];
  if (stg_config_path(cfg, "logs", dir, sizeof dir) == NULL) {
    fprintf(stderr, "stigmer: logs: the path of $STIGMER_HOME/logs is too long\n");
    return 1;
  }
  const char *const *names = o->n_names ? o->names : known;
  size_t n = o->n_names ? o->n_names : N_KNOWN;
  stg_logread_list_t lists[N_KNOWN], merged;
  memset(lists, 0, sizeof lists);
  memset(&merged, 0, sizeof merged);
  int ret = 0;
  for (size_t i = 0; i < n; i++) {
    int64_t tail = o->tail >= 0 ? o->tail : o->since_us ? -1 : 100;
    stg_logread_options_t ro = {dir, names[i], tail, o->since_us, 0};
    int rc = stg_logread_component(&ro, &lists[i]);
    if (rc != 0) {
      fprintf(stderr, "stigmer: read %s/%s.log: %s\n", dir, names[i], uv_strerror(rc));
      ret = 1;
      goto out;
    }
  }
  if (stg_logread_merge(lists, n, &merged) != 0) {
    fprintf(stderr, "stigmer: logs: out of memory\n");
    ret = 1;
    goto out;
  }
  for (size_t i = 0; i < merged.n; i++)
    print_line(o, merged.v[i].component, merged.v[i].text, merged.v[i].len);
out:
  stg_logread_list_free(&merged);
  for (size_t i = 0; i < n; i++)
    stg_logread_list_free(&lists[i]);
  return ret;
}

/* --- from the supervisor ------------------------------------------------------ */

static int from_daemon(stg_ctl_t *c, const stg_config_t *cfg, opts_t *o) {
  int64_t tail = o->tail >= 0 ? o->tail : o->since_us ? ALL_LINES : 100;
  json_t *req = json_pack("{s:s, s:I, s:b}", "cmd", "logs", "tail", (json_int_t)tail,
                          "follow", o->follow);
  if (req != NULL && o->n_names > 0) {
    json_t *a = json_array();
    for (size_t i = 0; i < o->n_names; i++)
      json_array_append_new(a, json_string(o->names[i]));
    json_object_set_new(req, "components", a);
  }
  int rc = req ? stg_ctl_send(c, req) : UV_ENOMEM;
  json_decref(req);
  if (rc != 0) {
    fprintf(stderr, "stigmer: logs: send the request to the supervisor: %s\n",
            uv_strerror(rc));
    return 1;
  }
  for (;;) {
    json_t *j = NULL;
    /* Print what has arrived; flush only before waiting for more. */
    rc = stg_ctl_recv(c, 0, &j);
    if (rc == UV_ETIMEDOUT) {
      fflush(stdout);
      rc = stg_ctl_recv(c, -1, &j);
    }
    if (rc == UV_EOF) {
      if (o->follow) {
        fflush(stdout);
        fprintf(stderr, "stigmer: the supervisor closed the connection (stopped)\n");
        return 0;
      }
      fprintf(stderr, "stigmer: logs: the supervisor closed the connection before "
                      "the end of the logs\n");
      return 1;
    }
    if (rc != 0) {
      fprintf(stderr, "stigmer: logs: read from the supervisor: %s\n", uv_strerror(rc));
      return 1;
    }
    json_t *ok = json_object_get(j, "ok");
    const char *comp = json_string_value(json_object_get(j, "component"));
    if (json_is_false(ok)) {
      json_t *e = json_object_get(j, "error");
      fprintf(stderr, "stigmer: logs: the supervisor refused: %s (%s)\n",
              json_string_value(json_object_get(e, "message"))
                  ? json_string_value(json_object_get(e, "message"))
                  : "no message",
              json_string_value(json_object_get(e, "code"))
                  ? json_string_value(json_object_get(e, "code"))
                  : "?");
      json_decref(j);
      return 1;
    }
    if (json_is_true(json_object_get(j, "end"))) {
      json_decref(j);
      return 0;
    }
    if (json_is_integer(json_object_get(j, "gap"))) {
      fflush(stdout);
      fprintf(stderr,
              "stigmer: %s: %lld lines not shown (the output was too slow); they are "
              "in %s/logs/%s.log\n",
              comp ? comp : "?", (long long)json_integer_value(json_object_get(j, "gap")),
              cfg->home, comp ? comp : "?");
    } else {
      json_t *line = json_object_get(j, "line");
      json_int_t us = json_integer_value(json_object_get(j, "us"));
      if (comp && json_is_string(line) && (o->since_us == 0 || (uint64_t)us >= o->since_us))
        print_line(o, comp, json_string_value(line), json_string_length(line));
    }
    json_decref(j);
  }
}

/* --- the command ---------------------------------------------------------------- */

static bool is_known(const char *name) {
  for (size_t i = 0; i < N_KNOWN; i++)
    if (strcmp(name, known[i]) == 0)
      return true;
  return false;
}

/* The value of an option given as "--opt V", "--opt=V" or "-oV". */
static const char *opt_value(int argc, char **argv, int *i, const char *arg, size_t flen) {
  if (arg[flen] == '=')
    return arg + flen + 1;
  if (arg[flen] != '\0' && arg[1] != '-')
    return arg + flen;
  if (*i + 1 >= argc)
    return NULL;
  return argv[++*i];
}

int stg_cli_daemon_logs(stg_cli_t *cli, int argc, char **argv) {
  opts_t o;
  memset(&o, 0, sizeof o);
  o.tail = -1;
  bool no_color = false, dashdash = false;
  const char *since = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (dashdash || a[0] != '-' || a[1] == '\0') {
      if (!is_known(a))
        return stg_cli_usage_error("logs: unknown component '%s' (expected server, "
                                   "workflow-runner, agent-runner or supervisor)", a);
      bool dup = false;
      for (size_t k = 0; k < o.n_names; k++)
        dup = dup || strcmp(o.names[k], a) == 0;
      if (!dup)
        o.names[o.n_names++] = a;
    } else if (strcmp(a, "--") == 0) {
      dashdash = true;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(usage, stdout);
      return 0;
    } else if (strcmp(a, "-f") == 0 || strcmp(a, "--follow") == 0) {
      o.follow = true;
    } else if (strcmp(a, "--no-color") == 0 || strcmp(a, "--no-colour") == 0) {
      no_color = true;
    } else if (strncmp(a, "-n", 2) == 0 || strncmp(a, "--tail", 6) == 0) {
      size_t flen = a[1] == '-' ? 6 : 2;
      if (a[1] == '-' && a[6] != '\0' && a[6] != '=')
        return stg_cli_usage_error("logs: unknown option '%s'", a);
      const char *v = opt_value(argc, argv, &i, a, flen);
      if (v == NULL)
        return stg_cli_usage_error("logs: option '%s' needs a value", a);
      if (stg_parse_int(v, 0, 1000000000, &o.tail) != 0)
        return stg_cli_usage_error("logs: -n: expected a number of lines, got '%s'", v);
    } else if (strncmp(a, "--since", 7) == 0 && (a[7] == '\0' || a[7] == '=')) {
      since = opt_value(argc, argv, &i, a, 7);
      if (since == NULL)
        return stg_cli_usage_error("logs: option '%s' needs a value", a);
      if (stg_log_parse_since(since, stg_log_now_us(), &o.since_us) != 0)
        return stg_cli_usage_error("logs: --since: expected a time like "
                                   "2026-11-21T05:39:11Z or a duration like 10m, got '%s'",
                                   since);
      if (o.since_us == 0)
        o.since_us = 1; /* the epoch itself: everything, but still "given" */
    } else {
      return stg_cli_usage_error("logs: unknown option '%s'", a);
    }
  }
  const char *nc = getenv("NO_COLOR");
  const char *term = getenv("TERM");
  o.color = !no_color && (nc == NULL || nc[0] == '\0') && isatty(STDOUT_FILENO) &&
            !(term && strcmp(term, "dumb") == 0);
  const char *const *shown = o.n_names ? o.names : known;
  size_t n_shown = o.n_names ? o.n_names : N_KNOWN;
  for (size_t i = 0; i < n_shown; i++)
    if ((int)strlen(shown[i]) > o.width)
      o.width = (int)strlen(shown[i]);

  /* Many lines per write when not a terminal (a terminal flushes per line
   * anyway, and before every wait for more). */
  static char obuf[1 << 16];
  if (!isatty(STDOUT_FILENO))
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);

  stg_config_t *cfg = stg_cli_config(cli);
  stg_ctl_t c;
  int rc = stg_ctl_connect(&c, cfg);
  if (rc == 0) {
    int ret = from_daemon(&c, cfg, &o);
    stg_ctl_close(&c);
    return ret;
  }
  stg_ctl_close(&c);
  if (rc != UV_ENOENT && rc != UV_ECONNREFUSED) {
    char sock[4096];
    fprintf(stderr, "stigmer: logs: connect to %s: %s\n",
            stg_config_path(cfg, "run/supervisor.sock", sock, sizeof sock) ? sock
                                                                            : "the supervisor",
            uv_strerror(rc));
    return 1;
  }
  int ret = from_files(cfg, &o);
  fflush(stdout);
  if (ret == 0 && o.follow)
    fprintf(stderr, "stigmer: the daemon is not running: printed the files, not "
                    "following (start it with `stigmer daemon start`)\n");
  return ret;
}
