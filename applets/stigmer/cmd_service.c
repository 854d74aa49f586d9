/* stigmer daemon install-service|uninstall-service: the stack as a systemd
 * user (or system) service, or a launchd agent, from the templates in
 * packaging/ that the build compiles in (stg_units.h). docs/install.md. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "cli.h"
#include "ctlclient.h"
#include "stg_units.h"

static const char usage[] =
    "Usage: stigmer daemon install-service [--system] [--dry-run]\n"
    "       stigmer daemon uninstall-service [--system] [--dry-run]\n"
    "\n"
    "install-service writes the service definition for this platform with\n"
    "this binary's real path, then has the service manager load, enable and\n"
    "(re)start it:\n"
    "  Linux   ~/.config/systemd/user/stigmer.service, systemctl --user;\n"
    "          --system: /etc/systemd/system/stigmer.service running as the\n"
    "          user stigmer (/etc/sysusers.d/stigmer.conf) with STIGMER_HOME\n"
    "          /var/lib/stigmer (as root)\n"
    "  macOS   ~/Library/LaunchAgents/dev.stigmer.daemon.plist, launchctl\n"
    "          bootstrap gui/UID\n"
    "uninstall-service stops and disables the service and removes the file.\n"
    "\n"
    "  --system    the system-wide systemd service (Linux, as root)\n"
    "  --dry-run   print the file and the commands; write and run nothing\n"
    "\n"
    "--home DIR or STIGMER_HOME at install time is written into the service.\n"
    "Exit status: 0 done, 1 failed (or no service manager here), 2 usage.\n"
    "See docs/install.md.\n";

typedef enum { MGR_SYSTEMD, MGR_LAUNCHD } manager_t;

#define LAUNCHD_LABEL "dev.stigmer.daemon"
#define MAX_FILES 2
#define MAX_CMDS 5
#define MAX_ARGS 6

typedef struct {
  char path[PATH_MAX]; /* where it goes */
  char *content;       /* rendered, owned; NULL for a removal */
  mode_t mode;         /* file mode */
} file_t;

typedef struct {
  const char *argv[MAX_ARGS + 1]; /* the command; strings live in the plan */
  bool may_fail;                  /* e.g. bootout of a service not loaded */
} command_t;

typedef struct {
  manager_t mgr;        /* which service manager */
  bool system;          /* --system */
  bool dry_run;         /* --dry-run */
  bool install;         /* install (else uninstall) */
  char exe[PATH_MAX];   /* this binary's real path */
  char home[PATH_MAX];  /* STIGMER_HOME to write into the unit, "" for none */
  char logdir[PATH_MAX]; /* launchd: $STIGMER_HOME/logs */
  char domain[64];      /* launchd: gui/UID */
  char target[128];     /* launchd: gui/UID/dev.stigmer.daemon */
  file_t files[MAX_FILES];
  int n_files;
  command_t cmds[MAX_CMDS];
  int n_cmds;
} plan_t;

/* --- rendering ---------------------------------------------------------------------- */

typedef struct {
  const char *name;  /* placeholder without the @s */
  const char *value; /* "" drops the line */
} var_t;

typedef struct {
  char *buf;
  size_t len, cap;
} sbuf_t;

#define SBUF_MAX (1u << 20) /* templates are a few KiB */

static int sbuf_add(sbuf_t *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1)
      cap *= 2;
    if (cap > SBUF_MAX)
      return UV_E2BIG;
    char *nb = realloc(b->buf, cap);
    if (nb == NULL)
      return UV_ENOMEM;
    b->buf = nb;
    b->cap = cap;
  }
  memcpy(b->buf + b->len, s, n);
  b->len += n;
  b->buf[b->len] = '\0';
  return 0;
}

/* Adds s, escaped for XML when xml is set. */
static int sbuf_add_value(sbuf_t *b, const char *s, bool xml) {
  if (!xml)
    return sbuf_add(b, s, strlen(s));
  int rc = 0;
  for (; *s && rc == 0; s++) {
    switch (*s) {
    case '&': rc = sbuf_add(b, "&amp;", 5); break;
    case '<': rc = sbuf_add(b, "&lt;", 4); break;
    case '>': rc = sbuf_add(b, "&gt;", 4); break;
    default: rc = sbuf_add(b, s, 1); break;
    }
  }
  return rc;
}

static const var_t *find_var(const var_t *vars, int n, const char *name, size_t len) {
  for (int i = 0; i < n; i++)
    if (strlen(vars[i].name) == len && memcmp(vars[i].name, name, len) == 0)
      return &vars[i];
  return NULL;
}

/* Fills in @NAME@ placeholders line by line; a line that names a variable
 * whose value is "" is left out. Returns the text (malloc) or NULL. */
static char *render(const char *tmpl, const var_t *vars, int n_vars, bool xml) {
  sbuf_t out = {NULL, 0, 0};
  const char *line = tmpl;
  int rc = 0;
  while (*line && rc == 0) {
    const char *eol = strchr(line, '\n');
    size_t llen = eol ? (size_t)(eol - line + 1) : strlen(line);
    /* First pass: does the line name an empty variable? */
    bool drop = false;
    for (const char *p = line; p < line + llen; p++) {
      if (*p != '@')
        continue;
      const char *q = p + 1;
      while (q < line + llen && ((*q >= 'A' && *q <= 'Z') || *q == '_'))
        q++;
      if (q > p + 1 && q < line + llen && *q == '@') {
        const var_t *v = find_var(vars, n_vars, p + 1, (size_t)(q - p - 1));
        if (v == NULL) {
          fprintf(stderr, "stigmer: template: unknown placeholder %.*s\n", (int)(q - p + 1), p);
          free(out.buf);
          return NULL;
        }
        if (v->value[0] == '\0')
          drop = true;
        p = q;
      }
    }
    if (!drop) {
      const char *p = line, *start = line;
      while (p < line + llen && rc == 0) {
        const char *q = p + 1;
        if (*p == '@') {
          while (q < line + llen && ((*q >= 'A' && *q <= 'Z') || *q == '_'))
            q++;
          if (q > p + 1 && q < line + llen && *q == '@') {
            const var_t *v = find_var(vars, n_vars, p + 1, (size_t)(q - p - 1));
            rc = sbuf_add(&out, start, (size_t)(p - start));
            if (rc == 0)
              rc = sbuf_add_value(&out, v->value, xml);
            p = start = q + 1;
            continue;
          }
        }
        p = q;
      }
      if (rc == 0)
        rc = sbuf_add(&out, start, (size_t)(line + llen - start));
    }
    line += llen;
  }
  if (rc != 0) {
    fprintf(stderr, "stigmer: template: %s\n", uv_strerror(rc));
    free(out.buf);
    return NULL;
  }
  if (out.buf == NULL)
    out.buf = strdup("");
  return out.buf;
}

/* --- the plan --------------------------------------------------------------------------- */

/* A path systemd reads as one word, unquoted, without specifiers. */
static bool systemd_safe(const char *s) {
  for (; *s; s++) {
    char c = *s;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          strchr("/._+-,:@=~", c) != NULL))
      return false;
  }
  return true;
}

static bool under(const char *path, const char *dir) {
  size_t n = strlen(dir);
  return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

static const char *user_home(void) {
  const char *h = getenv("HOME");
  if (h && h[0] == '/')
    return h;
  struct passwd *pw = getpwuid(getuid());
  return pw && pw->pw_dir ? pw->pw_dir : NULL;
}

/* Makes path absolute (without resolving links) into out. */
static int absolute(const char *path, char *out, size_t len) {
  if (path[0] == '/') {
    if ((size_t)snprintf(out, len, "%s", path) >= len)
      return UV_ENAMETOOLONG;
    return 0;
  }
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof cwd) == NULL)
    return -errno;
  if ((size_t)snprintf(out, len, "%s/%s", cwd, path) >= len)
    return UV_ENAMETOOLONG;
  return 0;
}

static void add_cmd(plan_t *p, bool may_fail, const char *a0, const char *a1, const char *a2,
                    const char *a3, const char *a4) {
  command_t *c = &p->cmds[p->n_cmds++];
  const char *a[] = {a0, a1, a2, a3, a4};
  int n = 0;
  for (int i = 0; i < 5; i++)
    if (a[i])
      c->argv[n++] = a[i];
  c->argv[n] = NULL;
  c->may_fail = may_fail;
}

/* systemctl [--user] a [b [c]] */
static void add_systemctl(plan_t *p, bool may_fail, const char *a, const char *b,
                          const char *c) {
  if (p->system)
    add_cmd(p, may_fail, "systemctl", a, b, c, NULL);
  else
    add_cmd(p, may_fail, "systemctl", "--user", a, b, c);
}

/* Fills the plan: paths, rendered files, commands. Returns 0, or 1 after
 * printing why not. */
static int make_plan(stg_cli_t *cli, plan_t *p) {
  if (p->system && p->mgr == MGR_LAUNCHD) {
    fprintf(stderr, "stigmer: %s-service --system: only the systemd service has a "
            "system-wide variant; on macOS the launchd agent runs per user\n",
            p->install ? "install" : "uninstall");
    return 1;
  }
  char exe[PATH_MAX];
  size_t exelen = sizeof exe;
  int rc = uv_exepath(exe, &exelen);
  if (rc != 0) {
    fprintf(stderr, "stigmer: cannot find this binary: %s\n", uv_strerror(rc));
    return 1;
  }
  if (realpath(exe, p->exe) == NULL) {
    fprintf(stderr, "stigmer: realpath %s: %s\n", exe, strerror(errno));
    return 1;
  }
  const char *uhome = user_home();
  if (!p->system && uhome == NULL) {
    fprintf(stderr, "stigmer: cannot find your home directory: set HOME\n");
    return 1;
  }

  /* STIGMER_HOME goes into a user service only when it was chosen. */
  const char *home = cli->home;
  if (home && p->system) {
    fprintf(stderr, "stigmer: %s-service --system: the system service's home is "
            "/var/lib/stigmer; --home does not apply\n", p->install ? "install" : "uninstall");
    return 2;
  }
  if (home == NULL && !p->system && getenv("STIGMER_HOME") && getenv("STIGMER_HOME")[0])
    home = getenv("STIGMER_HOME");
  if (home && (rc = absolute(home, p->home, sizeof p->home)) != 0) {
    fprintf(stderr, "stigmer: %s: %s\n", home, uv_strerror(rc));
    return 1;
  }

  if (p->mgr == MGR_SYSTEMD) {
    if (!systemd_safe(p->exe) || !systemd_safe(p->home)) {
      fprintf(stderr, "stigmer: %s has characters a unit file cannot carry as a plain "
              "word (spaces, quotes, %%, $, ...): move it first\n",
              !systemd_safe(p->exe) ? p->exe : p->home);
      return 1;
    }
    file_t *f = &p->files[p->n_files++];
    f->mode = 0644;
    const char *tmpl = stg_unit_systemd_user;
    if (p->system) {
      /* ProtectHome= hides /home, /root and /run/user from the service. */
      if (under(p->exe, "/home") || under(p->exe, "/root") || under(p->exe, "/run/user")) {
        fprintf(stderr, "stigmer: install-service --system: %s is under a home directory, "
                "which the system service cannot see (ProtectHome=yes); install the binary "
                "first (make install, or copy it to /usr/local/bin)\n", p->exe);
        return 1;
      }
      snprintf(f->path, sizeof f->path, "/etc/systemd/system/stigmer.service");
      tmpl = stg_unit_systemd_system;
    } else {
      const char *xdg = getenv("XDG_CONFIG_HOME");
      if (xdg && xdg[0] == '/')
        rc = snprintf(f->path, sizeof f->path, "%s/systemd/user/stigmer.service", xdg);
      else
        rc = snprintf(f->path, sizeof f->path, "%s/.config/systemd/user/stigmer.service", uhome);
      if (rc < 0 || (size_t)rc >= sizeof f->path) {
        fprintf(stderr, "stigmer: the unit's path is too long\n");
        return 1;
      }
    }
    if (p->install) {
      var_t vars[] = {{"STIGMER", p->exe}, {"STIGMER_HOME", p->home}};
      f->content = render(tmpl, vars, 2, false);
      if (f->content == NULL)
        return 1;
      if (p->system) {
        file_t *s = &p->files[p->n_files++];
        snprintf(s->path, sizeof s->path, "/etc/sysusers.d/stigmer.conf");
        s->mode = 0644;
        s->content = render(stg_unit_sysusers, NULL, 0, false);
        if (s->content == NULL)
          return 1;
        add_cmd(p, false, "systemd-sysusers", s->path, NULL, NULL, NULL);
      }
      add_systemctl(p, false, "daemon-reload", NULL, NULL);
      add_systemctl(p, false, "enable", "stigmer.service", NULL);
      add_systemctl(p, false, "restart", "stigmer.service", NULL);
    } else {
      /* Fails when the unit is not loaded: the file is removed anyway. */
      add_systemctl(p, true, "disable", "--now", "stigmer.service");
      add_systemctl(p, false, "daemon-reload", NULL, NULL);
    }
    return 0;
  }

  /* launchd */
  snprintf(p->domain, sizeof p->domain, "gui/%u", (unsigned)getuid());
  snprintf(p->target, sizeof p->target, "%s/%s", p->domain, LAUNCHD_LABEL);
  file_t *f = &p->files[p->n_files++];
  f->mode = 0644;
  rc = snprintf(f->path, sizeof f->path, "%s/Library/LaunchAgents/%s.plist", uhome,
                LAUNCHD_LABEL);
  if (rc < 0 || (size_t)rc >= sizeof f->path) {
    fprintf(stderr, "stigmer: the plist's path is too long\n");
    return 1;
  }
  if (p->install) {
    const char *h = p->home[0] ? p->home : stg_cli_config(cli)->home;
    char habs[PATH_MAX];
    if ((rc = absolute(h, habs, sizeof habs)) != 0 ||
        (size_t)snprintf(p->logdir, sizeof p->logdir, "%s/logs", habs) >= sizeof p->logdir) {
      fprintf(stderr, "stigmer: %s: %s\n", h, uv_strerror(rc ? rc : UV_ENAMETOOLONG));
      return 1;
    }
    var_t vars[] = {{"STIGMER", p->exe}, {"STIGMER_HOME", p->home}, {"LOG_DIR", p->logdir}};
    f->content = render(stg_unit_launchd, vars, 3, true);
    if (f->content == NULL)
      return 1;
    /* Unload an older definition (fails when none is loaded), clear a
     * `launchctl disable`, load this one. */
    add_cmd(p, true, "launchctl", "bootout", p->target, NULL, NULL);
    add_cmd(p, false, "launchctl", "enable", p->target, NULL, NULL);
    add_cmd(p, false, "launchctl", "bootstrap", p->domain, f->path, NULL);
  } else {
    add_cmd(p, true, "launchctl", "bootout", p->target, NULL, NULL);
  }
  return 0;
}

static void free_plan(plan_t *p) {
  for (int i = 0; i < p->n_files; i++)
    free(p->files[i].content);
}

/* --- doing it ------------------------------------------------------------------------ */

/* Finds prog in $PATH; true when it is there. */
static bool in_path(const char *prog) {
  const char *path = getenv("PATH");
  if (path == NULL || *path == '\0')
    return false;
  while (*path) {
    const char *end = strchr(path, ':');
    size_t n = end ? (size_t)(end - path) : strlen(path);
    char f[PATH_MAX];
    if (n > 0 && (size_t)snprintf(f, sizeof f, "%.*s/%s", (int)n, path, prog) < sizeof f &&
        access(f, X_OK) == 0)
      return true;
    path += n;
    if (*path == ':')
      path++;
  }
  return false;
}

/* Why this machine cannot run the plan's commands, or NULL. */
static const char *manager_absent(const plan_t *p, char *buf, size_t len) {
  struct stat st;
  if (p->mgr == MGR_LAUNCHD) {
    if (!in_path("launchctl")) {
      snprintf(buf, len, "launchctl is not in PATH: launchd is not this machine's service "
               "manager");
      return buf;
    }
    return NULL;
  }
  if (!in_path("systemctl")) {
    snprintf(buf, len, "systemctl is not in PATH: systemd is not this machine's service "
             "manager; run `stigmer daemon run` under the one it has");
    return buf;
  }
  if (stat("/run/systemd/system", &st) != 0) {
    snprintf(buf, len, "systemd is not running here (no /run/systemd/system: a container, "
             "or another init); run `stigmer daemon run` under the service manager "
             "this machine has");
    return buf;
  }
  if (p->system && p->install && !in_path("systemd-sysusers")) {
    snprintf(buf, len, "systemd-sysusers is not in PATH: cannot create the user stigmer");
    return buf;
  }
  if (!p->system) {
    const char *rt = getenv("XDG_RUNTIME_DIR");
    char priv[PATH_MAX];
    if (rt == NULL || rt[0] != '/' ||
        (size_t)snprintf(priv, sizeof priv, "%s/systemd/private", rt) >= sizeof priv ||
        stat(priv, &st) != 0) {
      snprintf(buf, len, "no systemd user manager for this session ($XDG_RUNTIME_DIR/systemd/"
               "private is missing): log in through a systemd session (not su), or enable "
               "lingering with `loginctl enable-linger`; or use --system as root");
      return buf;
    }
  }
  return NULL;
}

static void print_cmd(FILE *out, const command_t *c) {
  for (int i = 0; c->argv[i]; i++)
    fprintf(out, "%s%s", i ? " " : "", c->argv[i]);
}

/* Runs a command, its output passed through. Returns its exit status, or
 * -1 when it could not be run. */
static int run_cmd(const command_t *c) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    execvp(c->argv[0], (char *const *)c->argv);
    dprintf(2, "stigmer: exec %s: %s\n", c->argv[0], strerror(errno));
    _exit(127);
  }
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR)
      return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* mkdir -p of path's parent directories. */
static int mkdirs_for(const char *path) {
  char d[PATH_MAX];
  snprintf(d, sizeof d, "%s", path);
  for (char *s = d + 1; *s; s++) {
    if (*s != '/')
      continue;
    *s = '\0';
    if (mkdir(d, 0755) != 0 && errno != EEXIST)
      return -errno;
    *s = '/';
  }
  return 0;
}

/* Writes f atomically: temp file in the same directory, fsync, rename. */
static int write_file(const file_t *f) {
  int rc = mkdirs_for(f->path);
  if (rc != 0)
    return rc;
  char tmp[PATH_MAX + 16];
  snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", f->path);
  int fd = mkstemp(tmp);
  if (fd < 0)
    return -errno;
  size_t len = strlen(f->content), off = 0;
  while (off < len) {
    ssize_t w = write(fd, f->content + off, len - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0) {
      rc = -errno;
      goto out;
    }
    off += (size_t)w;
  }
  if (fchmod(fd, f->mode) != 0 || fsync(fd) != 0) {
    rc = -errno;
    goto out;
  }
  if (close(fd) != 0) {
    fd = -1;
    rc = -errno;
    goto out;
  }
  fd = -1;
  if (rename(tmp, f->path) != 0)
    rc = -errno;
out:
  if (fd >= 0)
    close(fd);
  if (rc != 0)
    unlink(tmp);
  return rc;
}

/* A daemon answering on the control socket that the service manager did not
 * start would hold the lock the service's supervisor needs. */
static bool foreign_daemon(stg_cli_t *cli, const plan_t *p) {
  if (p->system)
    return false;
  stg_ctl_t c;
  int rc = stg_ctl_connect(&c, stg_cli_config(cli));
  stg_ctl_close(&c);
  if (rc != 0)
    return false;
  command_t q = {{NULL}, true};
  if (p->mgr == MGR_SYSTEMD) {
    const char *a[] = {"systemctl", "--user", "--quiet", "is-active", "stigmer.service", NULL};
    memcpy(q.argv, a, sizeof a);
  } else {
    const char *a[] = {"launchctl", "print", p->target, NULL};
    memcpy(q.argv, a, sizeof a);
  }
  /* Silence the query's own output. */
  int saved = dup(STDOUT_FILENO), saved2 = dup(STDERR_FILENO);
  int nul = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (nul >= 0) {
    dup2(nul, STDOUT_FILENO);
    dup2(nul, STDERR_FILENO);
    close(nul);
  }
  int st = run_cmd(&q);
  if (saved >= 0) {
    dup2(saved, STDOUT_FILENO);
    close(saved);
  }
  if (saved2 >= 0) {
    dup2(saved2, STDERR_FILENO);
    close(saved2);
  }
  return st != 0;
}

static int print_dry_run(plan_t *p) {
  bool install = p->install;
  const char *verb = install ? "install-service" : "uninstall-service";
  printf("# stigmer daemon %s --dry-run: nothing is written or run\n", verb);
  for (int i = 0; install && i < p->n_files; i++) {
    file_t *f = &p->files[i];
    printf("# write %s (mode %04o):\n", f->path, (unsigned)f->mode);
    printf("# --- begin %s\n%s", f->path, f->content);
    if (f->content[0] && f->content[strlen(f->content) - 1] != '\n')
      printf("\n");
    printf("# --- end %s\n", f->path);
  }
  if (p->mgr == MGR_LAUNCHD && install)
    printf("# create %s\n", p->logdir);
  printf("# run:\n");
  for (int i = 0; i < p->n_cmds; i++) {
    print_cmd(stdout, &p->cmds[i]);
    printf("%s\n", p->cmds[i].may_fail ? "   # a failure is ignored" : "");
    if (!install && i == 0)
      printf("rm %s\n", p->files[0].path);
  }
  char why[512];
  if (manager_absent(p, why, sizeof why))
    fprintf(stderr, "stigmer: note: without --dry-run this would be refused: %s\n", why);
  return 0;
}

static int service_cmd(stg_cli_t *cli, int argc, char **argv, bool install) {
  plan_t *p = calloc(1, sizeof *p);
  if (p == NULL) {
    fprintf(stderr, "stigmer: out of memory\n");
    return 1;
  }
  int code = 1;
#if defined(__APPLE__)
  p->mgr = MGR_LAUNCHD;
#else
  p->mgr = MGR_SYSTEMD;
#endif
  p->install = install;
  bool platform_set = false;
  const char *name = install ? "install-service" : "uninstall-service";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--system") == 0) {
      p->system = true;
    } else if (strcmp(argv[i], "--dry-run") == 0) {
      p->dry_run = true;
    } else if (strcmp(argv[i], "--platform") == 0 && i + 1 < argc) {
      /* For tests and packagers: show another platform's files. */
      i++;
      if (strcmp(argv[i], "systemd") == 0)
        p->mgr = MGR_SYSTEMD;
      else if (strcmp(argv[i], "launchd") == 0)
        p->mgr = MGR_LAUNCHD;
      else {
        code = stg_cli_usage_error("daemon %s: --platform: expected systemd or launchd, got "
                                   "'%s'", name, argv[i]);
        goto out;
      }
      platform_set = true;
    } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fputs(usage, stdout);
      code = 0;
      goto out;
    } else {
      code = stg_cli_usage_error("daemon %s: unexpected argument '%s'", name, argv[i]);
      goto out;
    }
  }
  if (platform_set && !p->dry_run) {
    code = stg_cli_usage_error("daemon %s: --platform needs --dry-run (this machine can "
                               "only install its own kind of service)", name);
    goto out;
  }
  code = make_plan(cli, p);
  if (code != 0)
    goto out;
  if (p->dry_run) {
    code = print_dry_run(p);
    goto out;
  }

  code = 1;
  char why[512];
  if (manager_absent(p, why, sizeof why)) {
    fprintf(stderr, "stigmer: %s: %s\n", name, why);
    goto out;
  }
  if (p->system && geteuid() != 0) {
    fprintf(stderr, "stigmer: %s --system: must be run as root (it writes to /etc and runs "
            "systemctl)\n", name);
    goto out;
  }
  struct stat st;
  if (!install && stat(p->files[0].path, &st) != 0) {
    printf("stigmer: no service is installed (%s does not exist)\n", p->files[0].path);
    code = 0;
    goto out;
  }
  if (install && foreign_daemon(cli, p)) {
    fprintf(stderr, "stigmer: %s: a daemon started outside the service manager is running "
            "(stigmer daemon start); stop it first with `stigmer daemon stop`\n", name);
    goto out;
  }
  if (install) {
    for (int i = 0; i < p->n_files; i++) {
      int rc = write_file(&p->files[i]);
      if (rc != 0) {
        fprintf(stderr, "stigmer: write %s: %s\n", p->files[i].path, uv_strerror(rc));
        goto out;
      }
      printf("stigmer: wrote %s\n", p->files[i].path);
    }
    if (p->mgr == MGR_LAUNCHD) {
      char probe[PATH_MAX + 8];
      snprintf(probe, sizeof probe, "%s/x", p->logdir);
      int rc = mkdirs_for(probe);
      if (rc != 0) {
        fprintf(stderr, "stigmer: mkdir %s: %s\n", p->logdir, uv_strerror(rc));
        goto out;
      }
    }
  }
  for (int i = 0; i < p->n_cmds; i++) {
    command_t *c = &p->cmds[i];
    int st2 = run_cmd(c);
    if (st2 != 0 && !c->may_fail) {
      fprintf(stderr, "stigmer: `");
      print_cmd(stderr, c);
      if (st2 < 0)
        fprintf(stderr, "` could not be run: %s\n", strerror(errno));
      else
        fprintf(stderr, "` failed (exit status %d)\n", st2);
      goto out;
    }
    printf("stigmer: ran `");
    print_cmd(stdout, c);
    printf("`%s\n", st2 != 0 ? " (failed; ignored: nothing was loaded)" : "");
    /* Uninstall: remove the file once the service is stopped and disabled. */
    if (!install && i == 0) {
      if (unlink(p->files[0].path) != 0) {
        fprintf(stderr, "stigmer: remove %s: %s\n", p->files[0].path, strerror(errno));
        goto out;
      }
      printf("stigmer: removed %s\n", p->files[0].path);
    }
  }
  if (install && p->mgr == MGR_SYSTEMD)
    printf("stigmer: the service is enabled and running: systemctl %sstatus stigmer; logs: "
           "journalctl %s-u stigmer, or stigmer daemon logs\n", p->system ? "" : "--user ",
           p->system ? "" : "--user ");
  else if (install)
    printf("stigmer: the agent is loaded: launchctl print %s; logs: stigmer daemon logs\n",
           p->target);
  else if (p->system)
    printf("stigmer: the user stigmer and /var/lib/stigmer are kept\n");
  code = 0;
out:
  free_plan(p);
  free(p);
  return code;
}

int stg_cli_daemon_install_service(stg_cli_t *cli, int argc, char **argv) {
  return service_cmd(cli, argc, argv, true);
}

int stg_cli_daemon_uninstall_service(stg_cli_t *cli, int argc, char **argv) {
  return service_cmd(cli, argc, argv, false);
}
