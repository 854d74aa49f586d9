#include "proc.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

unsigned long long stg_proc_start_ticks(int pid, bool *zombie) {
  if (zombie)
    *zombie = false;
#if defined(__linux__)
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  char *p = strrchr(buf, ')'); /* the command may contain spaces and ')' */
  if (p == NULL)
    return 0;
  /* After ")": field 3 (the state), 4, ...; the start time is field 22,
   * the 20th token. */
  char *save = NULL;
  char *tok = strtok_r(p + 1, " ", &save);
  if (tok && zombie)
    *zombie = tok[0] == 'Z';
  for (int field = 3; field < 22 && tok; field++)
    tok = strtok_r(NULL, " ", &save);
  return tok ? strtoull(tok, NULL, 10) : 0;
#else
  (void)pid;
  return 0;
#endif
}
