/* Parent death: our applets end when the supervisor that started them goes
 * away, even when it was killed with SIGKILL.
 *
 * The applet learns of it as a SIGTERM, so it shuts down by the same
 * graceful path as on `stigmer daemon stop`:
 *   - Linux: prctl(PR_SET_PDEATHSIG, SIGTERM);
 *   - macOS: a kqueue EVFILT_PROC/NOTE_EXIT watch on the parent, polled by
 *     the loop, which then sends SIGTERM to this process.
 *
 * The expected parent is $STIGMER_SUPERVISOR_PID when set (the supervisor
 * sets it for its children), else the parent at the time of the call. If
 * the process already has another parent (the supervisor died between
 * fork and this call), init fails with UV_ESRCH and the applet should exit.
 */
#ifndef STG_PDEATH_H
#define STG_PDEATH_H

#include <sys/types.h>

#include <uv.h>

typedef struct {
  pid_t parent;        /* the watched parent; 0 when there is none */
  /* private */
#ifdef __APPLE__
  int kq;              /* kqueue with the NOTE_EXIT filter */
  uv_poll_t poll;      /* the loop's watch on kq */
  int poll_open;
#endif
} stg_pdeath_t;

/* The environment variable that names the expected parent. */
#define STG_PDEATH_ENV "STIGMER_SUPERVISOR_PID"

/* Arms the watch. Returns 0; UV_ESRCH when the expected parent is already
 * gone; UV_EINVAL when $STIGMER_SUPERVISOR_PID is not a pid; or the error
 * of the system call that failed. The loop must not outlive a successful
 * watch without stg_pdeath_close(). */
int stg_pdeath_init(uv_loop_t *loop, stg_pdeath_t *pd);

/* Whether the watched parent is gone now (getppid() differs). */
int stg_pdeath_parent_gone(const stg_pdeath_t *pd);

/* Closes the loop handle (macOS); nothing to close on Linux. */
void stg_pdeath_close(stg_pdeath_t *pd);

#endif
