/* stg-bench: the measuring parts of `make bench` (bench/run.sh), where a
 * shell would be too coarse. Not a test: it prints numbers, one result per
 * line as `key value` pairs, and exits non-zero only when it cannot measure.
 *
 *   stg-bench write N LEN GATE hold|exit
 *       The log-throughput child: opens the FIFO GATE for reading (which
 *       blocks until the driver opens it for writing, the start signal),
 *       then writes N lines of exactly LEN bytes, "seq=%010ld xxx...\n",
 *       in 64 KiB writes to stdout, then a last line "seq=END". `hold`
 *       then waits for SIGTERM (a supervised child must not exit and be
 *       restarted), `exit` exits 0 (a pipe to a logger ends).
 *   stg-bench count N FILE...
 *       Counts the lines holding "seq=NNNNNNNNNN" in the FILEs, checks that
 *       each of 0..N-1 is there exactly once: prints `lines L missing M
 *       duplicate D bytes B`; exit 1 if any is missing or doubled.
 *   stg-bench logwait FILE TIMEOUT_S
 *       Waits (polling the last 4 KiB every 1 ms) until a line of FILE
 *       ends with "seq=END"; prints `waited_ns T`. Used for the supervisor,
 *       whose child does not exit.
 *   stg-bench gate GATE
 *       Opens the FIFO GATE for writing and closes it: the start signal.
 *       Prints `t0_ns T` (CLOCK_MONOTONIC) just before the open.
 *   stg-bench now
 *       Prints CLOCK_MONOTONIC in ns.
 *   stg-bench time CMD [ARGS...]
 *       Runs CMD, prints `wall_ns W cpu_ns C rc R` (CPU of CMD and its
 *       descendants: user + system).
 *   stg-bench restart SUP_PID EXE KILLS GAP_MS [CTL_SOCK COMPONENT]
 *       Restart latency: finds the child of SUP_PID whose /proc exe is EXE,
 *       waits until it has been up GAP_MS, SIGKILLs it, and polls
 *       /proc/SUP_PID/task/STAR/children every 20 us until a new child
 *       runs EXE (exec done): that is `running`. With CTL_SOCK, it then asks
 *       the supervisor's control socket for status until COMPONENT is
 *       `ready` with the new pid: `ready`. Prints one line per kill:
 *       `kill I running_ns R [ready_ns Q]`.
 * Without arguments, they come from STG_BENCH_ARGS (split at spaces).
 *   stg-bench fetch URL DEST SHA256 CA_FILE
 *       One verified download with lib/fetch (what the supervisor does for
 *       a missing agent-runner); prints `status S`; exit 1 on failure.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "fetch.h"

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void nap_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
  nanosleep(&ts, NULL);
}

static void die(const char *what) {
  fprintf(stderr, "stg-bench: %s: %s\n", what, strerror(errno));
  exit(2);
}

/* --- write ----------------------------------------------------------------- */

static volatile sig_atomic_t got_term;
static void on_term(int sig) {
  (void)sig;
  got_term = 1;
}

static void write_all(const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(STDOUT_FILENO, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      die("write stdout");
    }
    p += w;
    n -= (size_t)w;
  }
}

static int cmd_write(int argc, char **argv) {
  if (argc < 6)
    return 2;
  long n = atol(argv[2]);
  size_t len = (size_t)atol(argv[3]);
  int hold = strcmp(argv[5], "hold") == 0;
  if (len < 16 || len > 4096)
    return 2;
  signal(SIGTERM, on_term);
  int g = open(argv[4], O_RDONLY);
  if (g < 0)
    die("open gate");
  close(g);
  static char buf[65536 + 4096];
  size_t used = 0;
  for (long i = 0; i < n; i++) {
    int m = snprintf(buf + used, 32, "seq=%010ld ", i);
    memset(buf + used + m, 'x', len - 1 - (size_t)m);
    buf[used + len - 1] = '\n';
    used += len;
    if (used >= 65536) {
      write_all(buf, used);
      used = 0;
    }
  }
  memcpy(buf + used, "seq=END\n", 8);
  used += 8;
  write_all(buf, used);
  if (hold)
    while (!got_term)
      pause();
  return 0;
}

/* --- count ----------------------------------------------------------------- */

static int cmd_count(int argc, char **argv) {
  if (argc < 4)
    return 2;
  long n = atol(argv[2]);
  unsigned char *seen = calloc((size_t)n, 1);
  long lines = 0, dup = 0, bytes = 0;
  static char buf[1 << 20];
  for (int a = 3; a < argc; a++) {
    int fd = open(argv[a], O_RDONLY);
    if (fd < 0)
      die(argv[a]);
    size_t have = 0;
    for (;;) {
      ssize_t r = read(fd, buf + have, sizeof buf - have);
      if (r < 0)
        die("read");
      have += (size_t)r;
      bytes += r;
      char *p = buf, *end = buf + have, *nl;
      while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        char *s = memmem(p, (size_t)(nl - p), "seq=", 4);
        if (s && nl - s >= 14 && s[4] >= '0' && s[4] <= '9') {
          long v = strtol(s + 4, NULL, 10);
          lines++;
          if (v >= 0 && v < n) {
            if (seen[v])
              dup++;
            seen[v] = 1;
          }
        }
        p = nl + 1;
      }
      have = (size_t)(end - p);
      memmove(buf, p, have);
      if (r == 0)
        break;
    }
    close(fd);
  }
  long missing = 0;
  for (long i = 0; i < n; i++)
    missing += !seen[i];
  printf("lines %ld missing %ld duplicate %ld bytes %ld\n", lines, missing, dup, bytes);
  free(seen);
  return missing || dup ? 1 : 0;
}

/* --- logwait, gate, time --------------------------------------------------- */

static int cmd_logwait(int argc, char **argv) {
  if (argc < 4)
    return 2;
  uint64_t t0 = now_ns(), limit = (uint64_t)atol(argv[3]) * 1000000000u;
  char buf[4097];
  while (now_ns() - t0 < limit) {
    int fd = open(argv[2], O_RDONLY);
    if (fd >= 0) {
      off_t size = lseek(fd, 0, SEEK_END);
      off_t at = size > 4096 ? size - 4096 : 0;
      ssize_t r = pread(fd, buf, 4096, at);
      close(fd);
      if (r > 0) {
        buf[r] = 0;
        /* The supervisor may note something after the last line. */
        if (strstr(buf, "seq=END\n")) {
          printf("waited_ns %llu\n", (unsigned long long)(now_ns() - t0));
          return 0;
        }
      }
    }
    nap_us(1000);
  }
  fprintf(stderr, "stg-bench: logwait: no seq=END in %s\n", argv[2]);
  return 1;
}

static int cmd_gate(int argc, char **argv) {
  if (argc < 3)
    return 2;
  uint64_t t0 = now_ns();
  int fd = open(argv[2], O_WRONLY);
  if (fd < 0)
    die("open gate");
  close(fd);
  printf("t0_ns %llu\n", (unsigned long long)t0);
  return 0;
}

static int cmd_time(int argc, char **argv) {
  if (argc < 3)
    return 2;
  uint64_t t0 = now_ns();
  pid_t pid = fork();
  if (pid < 0)
    die("fork");
  if (pid == 0) {
    execvp(argv[2], argv + 2);
    _exit(127);
  }
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
    ;
  uint64_t wall = now_ns() - t0;
  struct rusage ru;
  getrusage(RUSAGE_CHILDREN, &ru);
  uint64_t cpu = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000u +
                 (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000u;
  printf("wall_ns %llu cpu_ns %llu rc %d\n", (unsigned long long)wall,
         (unsigned long long)cpu, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
  return 0;
}

/* --- restart ---------------------------------------------------------------- */

/* Children of sup whose exe is exe; returns how many, fills pids. */
static int children_running(pid_t sup, const char *exe, pid_t *pids, int max) {
  char path[64], buf[4096], link[PATH_MAX];
  int found = 0;
  snprintf(path, sizeof path, "/proc/%d/task", (int)sup);
  DIR *d = opendir(path);
  if (d == NULL)
    return -1;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    char cp[600];
    snprintf(cp, sizeof cp, "%s/%s/children", path, e->d_name);
    int fd = open(cp, O_RDONLY);
    if (fd < 0)
      continue;
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0)
      continue;
    buf[r] = 0;
    for (char *t = strtok(buf, " \n"); t; t = strtok(NULL, " \n")) {
      char ep[64];
      snprintf(ep, sizeof ep, "/proc/%s/exe", t);
      ssize_t l = readlink(ep, link, sizeof link - 1);
      if (l <= 0)
        continue;
      link[l] = 0;
      if (strcmp(link, exe) == 0 && found < max)
        pids[found++] = (pid_t)atoi(t);
    }
  }
  closedir(d);
  return found;
}

/* 1 when COMPONENT is ready with pid, 0 not yet, -1 error. */
static int comp_ready(const char *sock, const char *name, pid_t pid) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  static const char req[] = "{\"cmd\":\"status\"}\n";
  if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
    close(fd);
    return -1;
  }
  static char buf[65536];
  size_t have = 0;
  while (have < sizeof buf - 1) {
    ssize_t r = read(fd, buf + have, sizeof buf - 1 - have);
    if (r <= 0)
      break;
    have += (size_t)r;
    if (memchr(buf, '\n', have))
      break;
  }
  close(fd);
  buf[have] = 0;
  json_error_t err;
  json_t *j = json_loads(buf, JSON_DISABLE_EOF_CHECK, &err);
  if (j == NULL)
    return -1;
  int ready = 0;
  size_t i;
  json_t *c;
  json_array_foreach(json_object_get(j, "components"), i, c) {
    if (strcmp(json_string_value(json_object_get(c, "name")) ?: "", name) != 0)
      continue;
    const char *st = json_string_value(json_object_get(c, "state"));
    json_int_t p = json_integer_value(json_object_get(c, "pid"));
    ready = st && strcmp(st, "ready") == 0 && p == pid;
  }
  json_decref(j);
  return ready;
}

static int cmd_restart(int argc, char **argv) {
  if (argc < 6)
    return 2;
  pid_t sup = (pid_t)atoi(argv[2]);
  char exe[PATH_MAX];
  if (realpath(argv[3], exe) == NULL)
    die(argv[3]);
  int kills = atoi(argv[4]);
  uint64_t gap = (uint64_t)atol(argv[5]) * 1000000u;
  const char *sock = argc >= 8 ? argv[6] : NULL, *comp = argc >= 8 ? argv[7] : NULL;
  pid_t pids[8];
  /* The first child: wait for it, and count its uptime from now. */
  uint64_t t_limit = now_ns() + 10000000000u, started = now_ns();
  int n;
  while ((n = children_running(sup, exe, pids, 8)) == 0 && now_ns() < t_limit)
    nap_us(1000);
  if (n != 1) {
    fprintf(stderr, "stg-bench: restart: %d children of %d run %s\n", n, (int)sup, exe);
    return 1;
  }
  pid_t cur = pids[0];
  for (int k = 0; k < kills; k++) {
    while (now_ns() - started < gap)
      nap_us(10000);
    uint64_t t0 = now_ns();
    if (kill(cur, SIGKILL) != 0)
      die("kill");
    uint64_t running = 0, ready = 0, limit = t0 + 10000000000u;
    pid_t next = 0;
    while (now_ns() < limit) {
      n = children_running(sup, exe, pids, 8);
      for (int i = 0; i < n; i++)
        if (pids[i] != cur)
          next = pids[i];
      if (next) {
        running = now_ns() - t0;
        break;
      }
      nap_us(20);
    }
    if (!next) {
      fprintf(stderr, "stg-bench: restart: no new child within 10s after kill %d\n", k);
      return 1;
    }
    started = t0 + running;
    if (sock) {
      for (;;) {
        int r = comp_ready(sock, comp, next);
        if (r == 1) {
          ready = now_ns() - t0;
          break;
        }
        if (now_ns() > limit) {
          fprintf(stderr, "stg-bench: restart: %s not ready within 10s\n", comp);
          return 1;
        }
        nap_us(50);
      }
      printf("kill %d running_ns %llu ready_ns %llu\n", k, (unsigned long long)running,
             (unsigned long long)ready);
    } else {
      printf("kill %d running_ns %llu\n", k, (unsigned long long)running);
    }
    fflush(stdout);
    cur = next;
  }
  return 0;
}

/* --- fetch ------------------------------------------------------------------ */

static int fetch_status = 1;
static void on_fetch_done(stg_fetch_t *f, int status, const char *hex) {
  (void)f;
  (void)hex;
  fetch_status = status;
}

static int cmd_fetch(int argc, char **argv) {
  if (argc < 6)
    return 2;
  signal(SIGPIPE, SIG_IGN);
  uv_loop_t loop;
  uv_loop_init(&loop);
  static stg_fetch_t f;
  stg_fetch_options_t o = {
      .url = argv[2],
      .dest = argv[3],
      .sha256_hex = argv[4],
      .ca_file = argv[5],
      .mode = 0755,
      .max_attempts = 1,
      .done = on_fetch_done,
  };
  int rc = stg_fetch_start(&loop, &f, &o);
  if (rc != 0) {
    fprintf(stderr, "stg-bench: fetch: %s\n", uv_strerror(rc));
    return 1;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  printf("status %d\n", fetch_status);
  return fetch_status == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  /* A supervisor runs its agent-runner without arguments: take them from
   * STG_BENCH_ARGS (split at spaces) then. */
  static char *envargv[16];
  const char *ea = getenv("STG_BENCH_ARGS");
  if (argc < 2 && ea != NULL) {
    static char copy[1024];
    snprintf(copy, sizeof copy, "%s", ea);
    int n = 0;
    envargv[n++] = argv[0];
    for (char *t = strtok(copy, " "); t && n < 15; t = strtok(NULL, " "))
      envargv[n++] = t;
    envargv[n] = NULL;
    argc = n;
    argv = envargv;
  }
  const char *c = argc > 1 ? argv[1] : "";
  int rc = 2;
  if (strcmp(c, "write") == 0)
    rc = cmd_write(argc, argv);
  else if (strcmp(c, "count") == 0)
    rc = cmd_count(argc, argv);
  else if (strcmp(c, "logwait") == 0)
    rc = cmd_logwait(argc, argv);
  else if (strcmp(c, "gate") == 0)
    rc = cmd_gate(argc, argv);
  else if (strcmp(c, "now") == 0) {
    printf("%llu\n", (unsigned long long)now_ns());
    rc = 0;
  } else if (strcmp(c, "time") == 0)
    rc = cmd_time(argc, argv);
  else if (strcmp(c, "restart") == 0)
    rc = cmd_restart(argc, argv);
  else if (strcmp(c, "fetch") == 0)
    rc = cmd_fetch(argc, argv);
  if (rc == 2)
    fprintf(stderr, "usage: stg-bench write|count|logwait|gate|now|time|restart|fetch ... "
                    "(see bench/stg-bench.c)\n");
  return rc;
}
