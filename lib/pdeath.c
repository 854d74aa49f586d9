#include "pdeath.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__linux__)
#include <sys/prctl.h>
#endif
#ifdef __APPLE__
#include <sys/event.h>
#include <sys/time.h>
#include <sys/types.h>
#endif

#include "log.h"

/* The expected parent: $STIGMER_SUPERVISOR_PID, else the current one. */
static int expected_parent(pid_t *out) {
  const char *s = getenv(STG_PDEATH_ENV);
  if (s == NULL || *s == '\0') {
    *out = getppid();
    return 0;
  }
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end != '\0' || v <= 0 || (long)(pid_t)v != v)
    return UV_EINVAL;
  *out = (pid_t)v;
  return 0;
}

int stg_pdeath_parent_gone(const stg_pdeath_t *pd) {
  return pd->parent > 0 && getppid() != pd->parent;
}

#ifdef __APPLE__
static void on_parent_event(uv_poll_t *p, int status, int events) {
  stg_pdeath_t *pd = (stg_pdeath_t *)((char *)p - offsetof(stg_pdeath_t, poll));
  struct kevent ev;
  struct timespec zero = {0, 0};
  int n = kevent(pd->kq, NULL, 0, &ev, 1, &zero);
  if (status < 0 || (n == 1 && (ev.fflags & NOTE_EXIT))) {
    uv_poll_stop(p);
    kill(getpid(), SIGTERM); /* the applet's own SIGTERM path */
  }
}
#endif

int stg_pdeath_init(uv_loop_t *loop, stg_pdeath_t *pd) {
  memset(pd, 0, sizeof *pd);
  pid_t parent;
  int rc = expected_parent(&parent);
  if (rc != 0)
    return rc;
  unsetenv(STG_PDEATH_ENV); /* meant for us, not for our own children */
  if (parent <= 1) {
    /* Started by init (or a container's pid 1): no parent to outlive. */
    pd->parent = 0;
    return 0;
  }
#if defined(__linux__)
  (void)loop;
  if (prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0) != 0)
    return -errno;
  /* The parent may have died before the prctl: then no signal will come,
   * and we have been re-parented already. */
  if (getppid() != parent)
    return UV_ESRCH;
  pd->parent = parent;
  return 0;
#elif defined(__APPLE__)
  pd->kq = kqueue();
  if (pd->kq < 0)
    return -errno;
  struct kevent ev;
  EV_SET(&ev, parent, EVFILT_PROC, EV_ADD | EV_ONESHOT, NOTE_EXIT, 0, NULL);
  if (kevent(pd->kq, &ev, 1, NULL, 0, NULL) != 0) {
    rc = errno == ESRCH ? UV_ESRCH : -errno;
    goto out;
  }
  if (getppid() != parent) {
    rc = UV_ESRCH;
    goto out;
  }
  rc = uv_poll_init(loop, &pd->poll, pd->kq);
  if (rc != 0)
    goto out;
  pd->poll_open = 1;
  rc = uv_poll_start(&pd->poll, UV_READABLE, on_parent_event);
  if (rc != 0) {
    stg_pdeath_close(pd);
    return rc;
  }
  pd->parent = parent;
  return 0;
out:
  close(pd->kq);
  pd->kq = -1;
  return rc;
#else
  (void)loop;
  return UV_ENOSYS;
#endif
}

#ifdef __APPLE__
static void on_poll_closed(uv_handle_t *h) {
  stg_pdeath_t *pd = (stg_pdeath_t *)((char *)h - offsetof(stg_pdeath_t, poll));
  close(pd->kq);
  pd->kq = -1;
}
#endif

void stg_pdeath_close(stg_pdeath_t *pd) {
#ifdef __APPLE__
  if (pd->poll_open) {
    pd->poll_open = 0;
    uv_close((uv_handle_t *)&pd->poll, on_poll_closed);
  }
#else
  (void)pd;
#endif
}
