#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int stg_notify(const char *msg) {
  const char *path = getenv("NOTIFY_SOCKET");
  if (path == NULL || *path == '\0')
    return 0;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  size_t pl = strlen(path);
  if (pl >= sizeof sa.sun_path)
    return -ENAMETOOLONG;
  memcpy(sa.sun_path, path, pl);
  socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + pl);
  if (path[0] == '@')
    sa.sun_path[0] = '\0'; /* abstract namespace: no trailing NUL counted */
  else
    salen += 1;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  ssize_t n = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
  int rc = n < 0 ? -errno : 0;
  close(fd);
  return rc;
}

unsigned long long stg_notify_watchdog_ms(void) {
  const char *s = getenv("WATCHDOG_USEC");
  if (s == NULL || *s == '\0')
    return 0;
  char *end;
  errno = 0;
  unsigned long long us = strtoull(s, &end, 10);
  if (errno || *end != '\0')
    return 0;
  return us / 1000;
}
