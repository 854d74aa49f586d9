#include "applets.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include <uv.h>

/* Sorted by name (strcmp order); test/unit/test_applets.c checks it. */
const stg_applet_t stg_applets[] = {
    {"agent-runner-supervisor", agent_runner_supervisor_main, "agent-runner-supervisor",
     STG_APPLET_HIDDEN | STG_APPLET_LINK, "the supervisor: the daemon itself"},
    {"internal-server", internal_server_main, "internal-server", STG_APPLET_HIDDEN,
     "the stack's API server"},
    {"internal-workflow-runner", internal_workflow_runner_main, "internal-workflow-runner",
     STG_APPLET_HIDDEN, "the stack's workflow runner"},
    {"stigmer", stigmer_main, "stigmer", 0, "the command-line interface"},
    {"stigmer-server", internal_server_main, "internal-server",
     STG_APPLET_HIDDEN | STG_APPLET_LINK, "link: internal-server"},
    {"stigmer-workflow-runner", internal_workflow_runner_main, "internal-workflow-runner",
     STG_APPLET_HIDDEN | STG_APPLET_LINK, "link: internal-workflow-runner"},
};

const unsigned stg_applets_count = sizeof stg_applets / sizeof stg_applets[0];

const stg_applet_t *stg_applet_find(const char *name) {
  unsigned lo = 0, hi = stg_applets_count;
  while (lo < hi) {
    unsigned mid = lo + (hi - lo) / 2;
    int c = strcmp(name, stg_applets[mid].name);
    if (c == 0)
      return &stg_applets[mid];
    if (c < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return NULL;
}

static const char *base_name(const char *path) {
  const char *s = strrchr(path, '/');
  return s ? s + 1 : path;
}

static void set_process_name(const char *name) {
#if defined(__linux__)
  /* /proc/PID/comm, what `ps -o comm` and top show (15 characters). */
  prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
#else
  (void)name;
#endif
}

static int run(const stg_applet_t *a, int argc, char **argv) {
  if (strcmp(a->applet, "stigmer") != 0)
    set_process_name(a->applet);
  return a->main(argc, argv);
}

static int list_applets(void) {
  for (unsigned i = 0; i < stg_applets_count; i++)
    printf("%s\n", stg_applets[i].name);
  return 0;
}

/* --install [-s] DIR: the links, made idempotently; a file that is not a
 * link to this binary is never overwritten. */
static int install_links(int argc, char **argv) {
  int symbolic = 0;
  const char *dir = NULL;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "-s") == 0)
      symbolic = 1;
    else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      fprintf(stderr, "stigmer: --install: unknown option '%s'\n"
              "Try 'stigmer --help' for more information.\n", argv[i]);
      return 2;
    } else if (dir == NULL)
      dir = argv[i];
    else {
      fprintf(stderr, "stigmer: --install: one directory only ('%s')\n"
              "Try 'stigmer --help' for more information.\n", argv[i]);
      return 2;
    }
  }
  if (dir == NULL) {
    fprintf(stderr, "stigmer: --install: missing DIR\n"
            "Usage: stigmer --install [-s] DIR\n"
            "Try 'stigmer --help' for more information.\n");
    return 2;
  }
  char exe[PATH_MAX];
  size_t len = sizeof exe;
  int rc = uv_exepath(exe, &len);
  if (rc != 0) {
    fprintf(stderr, "stigmer: --install: cannot find this binary: %s\n", uv_strerror(rc));
    return 1;
  }
  struct stat est;
  if (stat(exe, &est) != 0) {
    fprintf(stderr, "stigmer: --install: stat %s: %s\n", exe, strerror(errno));
    return 1;
  }
  struct stat dst;
  if (stat(dir, &dst) != 0 || !S_ISDIR(dst.st_mode)) {
    fprintf(stderr, "stigmer: --install: %s: %s\n", dir,
            errno ? strerror(errno) : "Not a directory");
    return 1;
  }
  int status = 0;
  for (unsigned i = 0; i < stg_applets_count; i++) {
    const stg_applet_t *a = &stg_applets[i];
    if (!(a->flags & STG_APPLET_LINK))
      continue;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, a->name) >= (int)sizeof path) {
      fprintf(stderr, "stigmer: --install: %s/%s: path too long\n", dir, a->name);
      status = 1;
      continue;
    }
    struct stat lst;
    if (lstat(path, &lst) == 0) {
      struct stat tst;
      int ours = stat(path, &tst) == 0 && tst.st_dev == est.st_dev && tst.st_ino == est.st_ino;
      if (ours) {
        printf("%s: already a link to %s\n", path, exe);
        continue;
      }
      if (S_ISLNK(lst.st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n < 0 ? 0 : n] = '\0';
        fprintf(stderr, "stigmer: --install: %s exists and points to %s, not to this "
                "binary; not overwritten\n", path, target);
      } else {
        fprintf(stderr, "stigmer: --install: %s exists and is not a link to this "
                "binary; not overwritten\n", path);
      }
      status = 1;
      continue;
    }
    if (errno != ENOENT) {
      fprintf(stderr, "stigmer: --install: %s: %s\n", path, strerror(errno));
      status = 1;
      continue;
    }
    if ((symbolic ? symlink(exe, path) : link(exe, path)) != 0) {
      int e = errno;
      fprintf(stderr, "stigmer: --install: %s %s: %s%s\n",
              symbolic ? "symlink" : "link", path, strerror(e),
              e == EXDEV ? " (use -s for symbolic links)" : "");
      status = 1;
      continue;
    }
    printf("%s -> %s\n", path, exe);
  }
  return status;
}

int stg_dispatch(int argc, char **argv) {
  if (argc < 1 || argv[0] == NULL) {
    fprintf(stderr, "stigmer: no argv[0]\n");
    return 127;
  }
  const char *name = base_name(argv[0]);
  const stg_applet_t *a = stg_applet_find(name);
  if (a == NULL) {
    fprintf(stderr, "stigmer: unknown applet '%s' (stigmer --list shows them)\n", name);
    return 127;
  }
  if (strcmp(a->name, "stigmer") != 0)
    return run(a, argc, argv);
  /* `stigmer APPLET ...` and the multi-call options. */
  if (argc > 1) {
    if (strcmp(argv[1], "--list") == 0)
      return list_applets();
    if (strcmp(argv[1], "--install") == 0)
      return install_links(argc - 2, argv + 2);
    const stg_applet_t *b = stg_applet_find(argv[1]);
    if (b != NULL && strcmp(b->name, "stigmer") != 0)
      return run(b, argc - 1, argv + 1);
  }
  return run(a, argc, argv);
}
