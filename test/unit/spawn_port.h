/* For tests that start a server fixture (test/fixtures/tls-server): spawn
 * argv with its standard output on a pipe, read the port it prints on its
 * first line (10 s at most), stop it again. */
#ifndef STG_TEST_SPAWN_PORT_H
#define STG_TEST_SPAWN_PORT_H

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Returns the port (> 0) with *pid set, or -1. */
static inline int spawn_port(char *const argv[], pid_t *pid) {
  int pfd[2];
  if (pipe2(pfd, O_CLOEXEC) < 0)
    return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
  int rc = posix_spawn(pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(pfd[1]);
  if (rc != 0) {
    close(pfd[0]);
    *pid = 0;
    return -1;
  }
  char line[32] = "";
  size_t n = 0;
  while (n < sizeof line - 1 && strchr(line, '\n') == NULL) {
    struct pollfd p = {pfd[0], POLLIN, 0};
    if (poll(&p, 1, 10000) <= 0)
      break;
    ssize_t r = read(pfd[0], line + n, sizeof line - 1 - n);
    if (r <= 0)
      break;
    n += (size_t)r;
    line[n] = '\0';
  }
  close(pfd[0]);
  int port = atoi(line);
  return port > 0 ? port : -1;
}

/* SIGTERM and reap; *pid becomes 0. */
static inline void spawn_stop(pid_t *pid) {
  if (*pid > 0) {
    kill(*pid, SIGTERM);
    waitpid(*pid, NULL, 0);
    *pid = 0;
  }
}

#endif
