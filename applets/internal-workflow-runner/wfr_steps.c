/* Records of running steps, so that a runner killed with SIGKILL does not
 * leave its steps running: each step lives in its own process group, out
 * of reach of the supervisor, and would otherwise finish (and append, and
 * deploy...) while the new runner runs it again.
 *
 * $STIGMER_HOME/run/steps/<pid> holds "<runner pid> <runner start>
 * <step start>" (start times from /proc/<pid>/stat, in clock ticks). A
 * starting runner kills the process group of each recorded step whose
 * runner is gone and whose leader is still the same process. Linux only
 * (elsewhere nothing is recorded).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "proc.h"
#include "wfr.h"

/* The start time of pid in clock ticks since boot, or 0 when it is gone
 * (or a zombie). */
static unsigned long long start_time(int pid) {
  bool zombie;
  unsigned long long t = stg_proc_start_ticks(pid, &zombie);
  return zombie ? 0 : t;
}

int stg__wfr_steps_init(const char *home, char *dir, size_t len) {
#ifdef __linux__
  int n = snprintf(dir, len, "%s/run", home);
  if (n < 0 || (size_t)n >= len)
    return UV_ENAMETOOLONG;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST)
    return -errno;
  n = snprintf(dir, len, "%s/run/steps", home);
  if (n < 0 || (size_t)n >= len)
    return UV_ENAMETOOLONG;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST)
    return -errno;
  return 0;
#else
  (void)home;
  (void)len;
  dir[0] = '\0';
  return UV_ENOTSUP;
#endif
}

void stg__wfr_steps_sweep(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL)
    return;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    char *end;
    long pid = strtol(de->d_name, &end, 10);
    if (*end != '\0' || pid <= 1)
      continue;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    FILE *f = fopen(path, "re");
    long rpid = 0;
    unsigned long long rstart = 0, sstart = 0;
    bool ok = f && fscanf(f, "%ld %llu %llu", &rpid, &rstart, &sstart) == 3;
    if (f)
      fclose(f);
    if (ok && rpid > 0 && start_time((int)rpid) == rstart && rstart != 0)
      continue; /* its runner still runs */
    if (ok && sstart != 0 && start_time((int)pid) == sstart) {
      stg_warn("a step left by a runner that is gone still runs (process group %ld); killing it",
               pid);
      if (kill((pid_t)-pid, SIGKILL) != 0 && errno != ESRCH)
        stg_warn("kill the process group %ld: %s", pid, strerror(errno));
    }
    unlink(path);
  }
  closedir(d);
}

void stg__wfr_steps_record(const char *dir, int pid) {
  if (dir == NULL || dir[0] == '\0' || pid <= 0)
    return;
  unsigned long long s = start_time(pid);
  unsigned long long me = start_time((int)getpid());
  if (s == 0 || me == 0)
    return; /* already gone */
  char path[4200], tmp[4300];
  snprintf(path, sizeof path, "%s/%d", dir, pid);
  snprintf(tmp, sizeof tmp, "%s/.%d.tmp", dir, pid);
  FILE *f = fopen(tmp, "we");
  if (f == NULL) {
    stg_warn("record step process %d in %s: %s", pid, dir, strerror(errno));
    return;
  }
  fprintf(f, "%d %llu %llu\n", (int)getpid(), me, s);
  if (fclose(f) != 0 || rename(tmp, path) != 0) {
    stg_warn("record step process %d in %s: %s", pid, dir, strerror(errno));
    unlink(tmp);
  }
}

void stg__wfr_steps_forget(const char *dir, int pid) {
  if (dir == NULL || dir[0] == '\0' || pid <= 0)
    return;
  char path[4200];
  snprintf(path, sizeof path, "%s/%d", dir, pid);
  unlink(path);
}
