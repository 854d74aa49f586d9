#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

static struct {
  char name[64];
  stg_log_level_t level;
  unsigned sinks;
  int fd;
} g = {"stigmer", STG_LOG_INFO, STG_LOG_SINK_STDERR, -1};

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void stg_log_set_name(const char *name) {
  snprintf(g.name, sizeof g.name, "%s", name);
}

void stg_log_set_level(stg_log_level_t level) { g.level = level; }
stg_log_level_t stg_log_get_level(void) { return g.level; }
void stg_log_set_sinks(unsigned sinks) { g.sinks = sinks; }

int stg_log_open(const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0)
    return -errno;
  if (g.fd >= 0)
    close(g.fd);
  g.fd = fd;
  return 0;
}

void stg_log_close(void) {
  if (g.fd >= 0)
    close(g.fd);
  g.fd = -1;
}

int stg_log_level_parse(const char *s, stg_log_level_t *out) {
  for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
    if (strcmp(s, level_names[i]) == 0) {
      *out = (stg_log_level_t)i;
      return 0;
    }
  }
  if (strcmp(s, "warning") == 0) {
    *out = STG_LOG_WARN;
    return 0;
  }
  return UV_EINVAL;
}

const char *stg_log_level_name(stg_log_level_t level) {
  if ((unsigned)level < sizeof level_names / sizeof level_names[0])
    return level_names[level];
  return "?";
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return; /* nowhere left to report a failing log sink */
    }
    p += w;
    n -= (size_t)w;
  }
}

void stg_vlog(stg_log_level_t level, const char *fmt, va_list ap) {
  if (level > g.level)
    return;
  int saved_errno = errno;
  char buf[4096];
  struct timeval tv;
  struct tm tm;
  int n;
  /* Under the supervisor (STIGMER_COMPONENT set) the capture time stamps
   * each line already; a second timestamp would only be noise. */
  static int captured = -1;
  if (captured < 0)
    captured = getenv("STIGMER_COMPONENT") != NULL;
  if (captured && (g.sinks & STG_LOG_SINK_FILE) == 0) {
    n = snprintf(buf, sizeof buf, "%-5s %s: ", level_names[level], g.name);
  } else {
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ %-5s %s: ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                 tm.tm_sec, (long)tv.tv_usec, level_names[level], g.name);
  }
  if (n < 0)
    n = 0;
  size_t len = (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1;
  int m = vsnprintf(buf + len, sizeof buf - len, fmt, ap);
  if (m > 0)
    len += (size_t)m < sizeof buf - len ? (size_t)m : sizeof buf - len - 1;
  if (len >= sizeof buf - 1)
    len = sizeof buf - 2;
  buf[len++] = '\n';
  if (g.sinks & STG_LOG_SINK_STDERR)
    write_all(STDERR_FILENO, buf, len);
  if ((g.sinks & STG_LOG_SINK_FILE) && g.fd >= 0)
    write_all(g.fd, buf, len);
  errno = saved_errno;
}

void stg_log(stg_log_level_t level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  stg_vlog(level, fmt, ap);
  va_end(ap);
}
