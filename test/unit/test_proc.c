/* stg_proc_start_ticks: stable for a live process, different for another
 * one, 0 when gone, and a zombie is recognised. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "proc.h"

TEST(self_and_children) {
#if defined(__linux__)
  bool z = true;
  unsigned long long me = stg_proc_start_ticks(getpid(), &z);
  CHECK(me > 0);
  CHECK(!z);
  CHECK_EQ_INT(stg_proc_start_ticks(getpid(), NULL), me);
  pid_t pid = fork();
  if (pid == 0) {
    _exit(0);
  }
  REQUIRE(pid > 0);
  /* Until it is reaped, it is a zombie with a start time of its own. */
  for (int i = 0; i < 500; i++) {
    stg_proc_start_ticks(pid, &z);
    if (z)
      break;
    usleep(2000);
  }
  CHECK(z);
  CHECK(stg_proc_start_ticks(pid, NULL) >= me);
  int st;
  waitpid(pid, &st, 0);
  CHECK_EQ_INT(stg_proc_start_ticks(pid, &z), 0);
  CHECK(!z);
#endif
}

int main(void) {
  RUN(self_and_children);
  return CHECK_DONE();
}
