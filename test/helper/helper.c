/* stg-test-helper MODE [ARGS]: misbehaving children for the supervisor's
 * tests. Each mode is a small program of its own:
 *
 *   sleep                   wait for SIGTERM, exit 0
 *   exit N [DELAY_MS]       exit with status N (after DELAY_MS)
 *   crash [SIGNAL]          die by a signal (default SIGSEGV)
 *   ignore-term             ignore SIGTERM; only SIGKILL ends it
 *   flood [LINE_BYTES]      write lines to stdout as fast as it can
 *   lines N [LINE_BYTES [FIRST [DONEFILE]]]
 *                           write N numbered lines (from FIRST, default 1),
 *                           create DONEFILE, then wait for SIGTERM
 *   grandchild PIDFILE      fork a grandchild that ignores SIGTERM, write
 *                           its pid to PIDFILE, wait for SIGTERM
 *   never-ready             never notify readiness, wait for SIGTERM
 *   notify-ready [DELAY_MS] send READY=1 over NOTIFY_SOCKET, then wait
 *   watchdog N INTERVAL_MS  READY=1, then N WATCHDOG=1 pings, then hang
 *   partial-line TEXT       write TEXT without a newline and exit 0
 *   ctl-send SOCKET FILE    connect to a unix stream socket, send FILE's
 *                           bytes, print what comes back until EOF (5s cap)
 *   notify-send TEXT        send TEXT as one datagram to NOTIFY_SOCKET, exit
 *
 * Without arguments (or with one absolute path, as s6-supervise passes), the
 * mode and its arguments come from the environment
 * variable STG_HELPER_MODE (split at spaces), so that the helper can stand
 * in for the agent-runner, which the supervisor runs without arguments.
 *   http-ok PORT [PORTFILE [STATUS]]
 *                           serve STATUS (default 200) to every HTTP request
 *                           on 127.0.0.1:PORT (0: any free port, written to
 *                           PORTFILE once listening); print each request
 *                           line to stdout; exit 0 on SIGTERM
 *   notify-recv SOCKPATH OUTFILE
 *                           receive sd_notify datagrams on the unix socket
 *                           SOCKPATH, append each to OUTFILE as a line
 *                           (OUTFILE is created once bound); exit 0 on SIGTERM
 *   pdeath READY OUT        stg_pdeath_init on a uv loop, touch READY, run
 *                           until SIGTERM, then write "term parent-gone=N"
 *                           to OUT and exit 0; exit 3 if the parent is
 *                           already gone, 4 on another pdeath error
 *   notify-listen PATH OUT  receive sd_notify datagrams on the unix socket
 *                           PATH, append each as a line to OUT, until
 *                           SIGTERM
 *   fake-llm PORT PORTFILE MODE, fake-tasks PORT PORTFILE [LEASE_MS]
 *                           a fake chat model and a fake task server
 *                           (fake_servers.c says how they behave)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <uv.h>

#include "notify.h"
#include "pdeath.h"

int stg_helper_fake_llm(int argc, char **argv);
int stg_helper_fake_tasks(int argc, char **argv);

static volatile sig_atomic_t got_term;

static void on_term(int sig) {
  (void)sig;
  got_term = 1;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !got_term)
    ;
}

static int wait_term(void) {
  signal(SIGTERM, on_term);
  while (!got_term)
    pause();
  return 0;
}

static void write_all(const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(STDOUT_FILENO, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      exit(3);
    }
    p += w;
    n -= (size_t)w;
  }
}

static int ctl_send(const char *sock, const char *file) {
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    perror("connect");
    return 1;
  }
  FILE *f = fopen(file, "rb");
  if (f == NULL) {
    perror(file);
    return 1;
  }
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
    if (send(fd, buf, n, MSG_NOSIGNAL) < 0)
      break; /* the supervisor may close early: read its reply anyway */
  }
  fclose(f);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ssize_t r;
  while ((r = read(fd, buf, sizeof buf)) > 0)
    write_all(buf, (size_t)r);
  close(fd);
  return r < 0 ? 3 : 0;
}

/* SIGTERM interrupts blocking accept() and recv() (no SA_RESTART). */
static void term_interrupts(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
}

/* Writes text to path through a temp file and a rename: readers see all or
 * nothing. */
static int write_file_atomic(const char *path, const char *text) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (f == NULL)
    return -1;
  fputs(text, f);
  if (fclose(f) != 0)
    return -1;
  return rename(tmp, path);
}

static int http_ok(int argc, char **argv) {
  int port = atoi(argv[2]);
  const char *portfile = argc >= 4 ? argv[3] : NULL;
  int status = argc >= 5 ? atoi(argv[4]) : 200;
  term_interrupts();
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (ls < 0)
    return 4;
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, 16) != 0) {
    fprintf(stderr, "http-ok: bind/listen 127.0.0.1:%d: %s\n", port, strerror(errno));
    return 5;
  }
  socklen_t sl = sizeof sa;
  getsockname(ls, (struct sockaddr *)&sa, &sl);
  if (portfile != NULL) {
    char text[32];
    snprintf(text, sizeof text, "%d\n", ntohs(sa.sin_port));
    if (write_file_atomic(portfile, text) != 0)
      return 6;
  }
  while (!got_term) {
    int c = accept(ls, NULL, NULL);
    if (c < 0)
      continue; /* EINTR on SIGTERM: the loop condition ends it */
    char req[8192];
    size_t len = 0;
    while (len < sizeof req - 1) {
      ssize_t n = read(c, req + len, sizeof req - 1 - len);
      if (n <= 0)
        break;
      len += (size_t)n;
      req[len] = '\0';
      if (strstr(req, "\r\n\r\n") != NULL)
        break;
    }
    req[len] = '\0';
    req[strcspn(req, "\r\n")] = '\0';
    printf("request: %s\n", req);
    fflush(stdout);
    char resp[256];
    int m = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                     "Connection: close\r\n\r\nok\n",
                     status, status == 200 ? "OK" : "Not OK");
    ssize_t w = write(c, resp, (size_t)m);
    (void)w;
    close(c);
  }
  close(ls);
  return 0;
}

static int notify_recv(const char *sockpath, const char *outfile) {
  term_interrupts();
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return 4;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (strlen(sockpath) >= sizeof sa.sun_path)
    return 5;
  strcpy(sa.sun_path, sockpath);
  unlink(sockpath);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    fprintf(stderr, "notify-recv: bind %s: %s\n", sockpath, strerror(errno));
    return 5;
  }
  int out = open(outfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0)
    return 6;
  while (!got_term) {
    char buf[4097];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    if (n < 0)
      continue; /* EINTR on SIGTERM */
    buf[n++] = '\n';
    ssize_t w = write(out, buf, (size_t)n);
    (void)w;
  }
  close(out);
  close(fd);
  unlink(sockpath);
  return 0;
}

static stg_pdeath_t pd;
static const char *pdeath_out;

static void pdeath_on_term(uv_signal_t *sig, int signum) {
  (void)signum;
  FILE *f = fopen(pdeath_out, "w");
  if (f) {
    fprintf(f, "term parent-gone=%d\n", stg_pdeath_parent_gone(&pd));
    fclose(f);
  }
  uv_close((uv_handle_t *)sig, NULL);
  stg_pdeath_close(&pd);
}

static int pdeath_mode(const char *ready, const char *out) {
  uv_loop_t loop;
  uv_signal_t sig;
  pdeath_out = out;
  uv_loop_init(&loop);
  int rc = stg_pdeath_init(&loop, &pd);
  if (rc != 0) {
    fprintf(stderr, "stg-test-helper: pdeath: %s\n", uv_strerror(rc));
    uv_loop_close(&loop);
    return rc == UV_ESRCH ? 3 : 4;
  }
  uv_signal_init(&loop, &sig);
  uv_signal_start(&sig, pdeath_on_term, SIGTERM);
  int fd = open(ready, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0)
    close(fd);
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop) == 0 ? 0 : 5;
}

static int notify_listen(const char *path, const char *out) {
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sa.sun_path)
    return 4;
  strcpy(sa.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  unlink(path);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    perror("stg-test-helper: notify-listen: bind");
    return 4;
  }
  while (!got_term) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0)
      continue;
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
      continue;
    buf[n] = '\0';
    FILE *f = fopen(out, "a");
    if (f == NULL)
      return 5;
    fprintf(f, "%s\n", buf);
    fclose(f);
  }
  close(fd);
  unlink(path);
  return 0;
}

static int usage(void) {
  fprintf(stderr, "usage: stg-test-helper MODE [ARGS] (see helper.c)\n");
  return 2;
}

int main(int argc, char **argv) {
  char *envargv[16];
  const char *em = getenv("STG_HELPER_MODE");
  /* s6-supervise runs ./run with the service directory as its argument:
   * with STG_HELPER_MODE set, a path there is not a mode. */
  if ((argc < 2 || (argc == 2 && argv[1][0] == '/')) && em != NULL) {
    static char copy[1024];
    snprintf(copy, sizeof copy, "%s", em);
    int n = 0;
    envargv[n++] = argv[0];
    for (char *t = strtok(copy, " "); t && n < 15; t = strtok(NULL, " "))
      envargv[n++] = t;
    envargv[n] = NULL;
    argc = n;
    argv = envargv;
  }
  if (argc < 2)
    return usage();
  const char *mode = argv[1];
  signal(SIGTERM, on_term);
  if (strcmp(mode, "sleep") == 0)
    return wait_term();
  if (strcmp(mode, "exit") == 0 && argc >= 3) {
    if (argc >= 4)
      sleep_ms(atol(argv[3]));
    return atoi(argv[2]);
  }
  if (strcmp(mode, "crash") == 0) {
    int sig = argc >= 3 ? atoi(argv[2]) : SIGSEGV;
    signal(sig, SIG_DFL);
    raise(sig);
    return 99;
  }
  if (strcmp(mode, "ignore-term") == 0) {
    signal(SIGTERM, SIG_IGN);
    printf("ignoring SIGTERM\n");
    fflush(stdout);
    for (;;)
      pause();
  }
  if (strcmp(mode, "flood") == 0) {
    size_t len = argc >= 3 ? (size_t)atol(argv[2]) : 100;
    if (len < 2)
      len = 2;
    char *line = malloc(len);
    memset(line, 'x', len - 1);
    line[len - 1] = '\n';
    while (!got_term)
      write_all(line, len);
    free(line);
    return 0;
  }
  if (strcmp(mode, "lines") == 0 && argc >= 3) {
    long n = atol(argv[2]);
    size_t len = argc >= 4 ? (size_t)atol(argv[3]) : 0;
    long first = argc >= 5 ? atol(argv[4]) : 1;
    char buf[65536];
    for (long i = first; i < first + n; i++) {
      int m = snprintf(buf, sizeof buf, "line %08ld", i);
      while ((size_t)m + 1 < len && (size_t)m < sizeof buf - 2)
        buf[m++] = '.';
      buf[m++] = '\n';
      write_all(buf, (size_t)m);
    }
    if (argc >= 6) { /* DONEFILE: say that every line was written */
      FILE *df = fopen(argv[5], "w");
      if (df)
        fclose(df);
    }
    return wait_term();
  }
  if (strcmp(mode, "grandchild") == 0 && argc >= 3) {
    pid_t pid = fork();
    if (pid < 0)
      return 4;
    if (pid == 0) {
      signal(SIGTERM, SIG_IGN);
      for (;;)
        pause();
    }
    FILE *f = fopen(argv[2], "w");
    if (f == NULL)
      return 5;
    fprintf(f, "%ld\n", (long)pid);
    fclose(f);
    stg_notify("READY=1");
    return wait_term();
  }
  if (strcmp(mode, "never-ready") == 0)
    return wait_term();
  if (strcmp(mode, "notify-ready") == 0) {
    if (argc >= 3)
      sleep_ms(atol(argv[2]));
    stg_notify("READY=1");
    return wait_term();
  }
  if (strcmp(mode, "watchdog") == 0 && argc >= 4) {
    long n = atol(argv[2]), interval = atol(argv[3]);
    stg_notify("READY=1");
    for (long i = 0; i < n && !got_term; i++) {
      stg_notify("WATCHDOG=1");
      sleep_ms(interval);
    }
    signal(SIGTERM, SIG_IGN); /* hung: only SIGKILL helps */
    for (;;)
      pause();
  }
  if (strcmp(mode, "ctl-send") == 0 && argc >= 4)
    return ctl_send(argv[2], argv[3]);
  if (strcmp(mode, "notify-send") == 0 && argc >= 3)
    return stg_notify(argv[2]) == 0 ? 0 : 1;
  if (strcmp(mode, "http-ok") == 0 && argc >= 3)
    return http_ok(argc, argv);
  if (strcmp(mode, "fake-llm") == 0 && argc >= 5)
    return stg_helper_fake_llm(argc, argv);
  if (strcmp(mode, "fake-tasks") == 0 && argc >= 4)
    return stg_helper_fake_tasks(argc, argv);
  if (strcmp(mode, "notify-recv") == 0 && argc >= 4)
    return notify_recv(argv[2], argv[3]);
  if (strcmp(mode, "pdeath") == 0 && argc >= 4)
    return pdeath_mode(argv[2], argv[3]);
  if (strcmp(mode, "notify-listen") == 0 && argc >= 4)
    return notify_listen(argv[2], argv[3]);
  if (strcmp(mode, "partial-line") == 0 && argc >= 3) {
    write_all(argv[2], strlen(argv[2]));
    return 0;
  }
  return usage();
}
