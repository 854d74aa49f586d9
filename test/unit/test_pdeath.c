/* lib/pdeath: a child using stg_pdeath ends by its SIGTERM path when its
 * parent is killed with SIGKILL; a child whose expected parent is already
 * gone refuses to start. The test process is a subreaper, so the orphaned
 * child is re-parented to it and its exit status can be checked. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static const char *helper;
static char dir[] = "/tmp/stg-pdeath.XXXXXX";

static int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* Waits (bounded) for pid to exit; returns its wait status or -1. */
static int wait_exit(pid_t pid, int seconds) {
  for (int i = 0; i < seconds * 100; i++) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
      return st;
    if (r < 0)
      return -1;
    usleep(10000);
  }
  return -1;
}

static void read_file(const char *path, char *buf, size_t len) {
  buf[0] = '\0';
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return;
  size_t n = fread(buf, 1, len - 1, f);
  buf[n] = '\0';
  fclose(f);
}

TEST(child_ends_when_parent_is_killed) {
  char ready[256], out[256];
  snprintf(ready, sizeof ready, "%s/ready", dir);
  snprintf(out, sizeof out, "%s/out", dir);
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t parent = fork();
  REQUIRE(parent >= 0);
  if (parent == 0) {
    /* The "supervisor": starts the child, reports its pid, waits. */
    close(fds[0]);
    pid_t child = fork();
    if (child == 0) {
      char pid[32];
      snprintf(pid, sizeof pid, "%ld", (long)getppid());
      setenv("STIGMER_SUPERVISOR_PID", pid, 1);
      execl(helper, helper, "pdeath", ready, out, (char *)NULL);
      _exit(127);
    }
    if (write(fds[1], &child, sizeof child) != sizeof child)
      _exit(1);
    for (;;)
      pause();
  }
  close(fds[1]);
  pid_t child = 0;
  REQUIRE(read(fds[0], &child, sizeof child) == sizeof child);
  close(fds[0]);
  for (int i = 0; i < 1000 && !exists(ready); i++)
    usleep(10000);
  REQUIRE(exists(ready));
  REQUIRE(kill(parent, SIGKILL) == 0);
  int st = wait_exit(parent, 10);
  CHECK(st >= 0 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  /* The orphan comes to us (subreaper) and ends by its SIGTERM path. */
  st = wait_exit(child, 20);
  if (st < 0)
    kill(child, SIGKILL);
  CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  char buf[256];
  read_file(out, buf, sizeof buf);
  CHECK_STR(buf, "term parent-gone=1\n");
}

TEST(expected_parent_already_gone) {
  /* A pid that surely is not our parent any more: a reaped child's. */
  pid_t dead = fork();
  REQUIRE(dead >= 0);
  if (dead == 0)
    _exit(0);
  REQUIRE(wait_exit(dead, 10) >= 0);
  char pid[32];
  snprintf(pid, sizeof pid, "%ld", (long)dead);
  char ready[256], out[256];
  snprintf(ready, sizeof ready, "%s/ready2", dir);
  snprintf(out, sizeof out, "%s/out2", dir);
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    setenv("STIGMER_SUPERVISOR_PID", pid, 1);
    execl(helper, helper, "pdeath", ready, out, (char *)NULL);
    _exit(127);
  }
  int st = wait_exit(child, 20);
  if (st < 0)
    kill(child, SIGKILL);
  CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 3);
  CHECK(!exists(ready));
}

TEST(bad_env_value) {
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    setenv("STIGMER_SUPERVISOR_PID", "12abc", 1);
    execl(helper, helper, "pdeath", "/dev/null", "/dev/null", (char *)NULL);
    _exit(127);
  }
  int st = wait_exit(child, 20);
  CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 4);
}

TEST(plain_sigterm_is_not_parent_death) {
  char ready[256], out[256];
  snprintf(ready, sizeof ready, "%s/ready3", dir);
  snprintf(out, sizeof out, "%s/out3", dir);
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    unsetenv("STIGMER_SUPERVISOR_PID"); /* expected parent: the test */
    execl(helper, helper, "pdeath", ready, out, (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 1000 && !exists(ready); i++)
    usleep(10000);
  REQUIRE(exists(ready));
  kill(child, SIGTERM);
  int st = wait_exit(child, 20);
  CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  char buf[256];
  read_file(out, buf, sizeof buf);
  CHECK_STR(buf, "term parent-gone=0\n");
}

int main(void) {
#ifndef __linux__
  /* The orphan's exit status needs a subreaper (Linux only). */
  printf("0 passed, 0 failed (skipped: not Linux)\n");
  return 0;
#endif
  helper = getenv("STG_TEST_HELPER");
  if (helper == NULL) {
    fprintf(stderr, "STG_TEST_HELPER is not set\n");
    return 1;
  }
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
#ifdef __linux__
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    perror("prctl(PR_SET_CHILD_SUBREAPER)");
    return 1;
  }
#endif
  RUN(child_ends_when_parent_is_killed);
  RUN(expected_parent_already_gone);
  RUN(bad_env_value);
  RUN(plain_sigterm_is_not_parent_death);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
  return CHECK_DONE();
}
