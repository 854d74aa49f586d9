/* Log capture for the supervisor: the lines children write on stdout and
 * stderr, stamped, written to logs/<component>.log (rotated by size) by a
 * writer thread, kept in a ring in memory, and fanned out to subscribers.
 * Contract: docs/internals/logs.md; the subscriber's JSON objects are the
 * `logs` reply of docs/internals/control.md.
 *
 * Everything here runs on the loop thread, except the writer thread which
 * is internal. Nothing here blocks the loop on the disk.
 */
#ifndef STG_LOGSTORE_H
#define STG_LOGSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "logread.h"

typedef struct stg_logstore_s stg_logstore_t; /* opaque; made by init */
typedef struct stg_logsrc_s stg_logsrc_t;     /* one per component name */
typedef struct stg_logsub_s stg_logsub_t;     /* one per subscriber */

typedef struct {
  const char *dir;   /* the logs directory (copied); created (mode 0700) if
                        missing, its parent must exist. Required. */
  uint64_t max_size; /* rotate <c>.log before a record would take it past
                        this many bytes; 0: never rotate ([logs] max_size,
                        10MiB by default) */
  unsigned keep;     /* rotated files kept, <c>.log.1 .. .keep; 0: none (the
                        full file is deleted) ([logs] keep, 5 by default) */
  size_t queue_cap;  /* bytes of records waiting for the writer thread; past
                        it records are dropped from the files and counted.
                        A record always fits an empty queue. 0: 4 MiB */
  size_t ring_cap;   /* bytes of recent records kept in memory per
                        component (text plus about 100 bytes each; taken
                        as lines arrive), for a subscriber's tail and for
                        catching up a subscriber that fell behind: how far
                        behind it can fall without a gap. 0: 8 MiB */
} stg_logstore_options_t;

/* Creates the store and starts its writer thread. Returns 0 and *out, or
 * a negative error. The store holds a uv_async handle (the writer thread's
 * way back to the loop) until stg_logstore_close has finished. */
int stg_logstore_init(uv_loop_t *loop, const stg_logstore_options_t *o,
                      stg_logstore_t **out);

/* Flushes pending partial lines (as lines), ends all subscriptions (their
 * deliver callbacks are not called again, and the stg_logsub_t pointers
 * become invalid), writes out the queue, joins the writer thread, closes
 * the handles, frees the store and calls done(arg) from the loop. No other
 * call on the store or its sources after this. */
void stg_logstore_close(stg_logstore_t *s, void (*done)(void *arg), void *arg);

/* Sets the rotation policy (applied by the writer from its next record). */
void stg_logstore_reconfigure(stg_logstore_t *s, uint64_t max_size, unsigned keep);
/* Closes every log file; each is opened again for its next record (SIGHUP,
 * after an outside tool moved the files). */
void stg_logstore_reopen(stg_logstore_t *s);

typedef struct {
  uint64_t records;       /* records made (lines, pieces and notes) */
  uint64_t queue_dropped; /* records not written: the queue was full */
  uint64_t disk_dropped;  /* records not written: open or write failed */
} stg_logstore_stats_t;
void stg_logstore_stats(stg_logstore_t *s, stg_logstore_stats_t *st);

/* --- pacing ------------------------------------------------------------------ */

/* A writer inside a batch that has written nothing for this long is
 * stalled (a hung or very slow disk). */
#define STG_LOGSTORE_STALL_MS 100

/* Pacing a flooding child to the disk's speed, never holding it on a
 * stalled or failing disk. stg_logstore_busy says yes when the writer's
 * queue holds half of queue_cap or more AND the writer is making progress;
 * the reader of a child's pipe may then stop reading until the room
 * callback (set with stg_logstore_on_room) says the queue has drained. A
 * stalled writer (stg_logstore_stalled) makes busy say no: the reader must
 * resume (check on a timer while paused), and lines beyond the queue's cap
 * are dropped and counted, as when the disk is full (its writes fail at
 * once and never pace anyone). */
bool stg_logstore_busy(stg_logstore_t *s);
bool stg_logstore_stalled(stg_logstore_t *s);
/* Called on the loop whenever the writer has drained its queue to half of
 * queue_cap after busy said yes (maybe more often). NULL: none. Not called
 * after stg_logstore_close. */
void stg_logstore_on_room(stg_logstore_t *s, void (*room)(void *arg), void *arg);

/* --- sources ------------------------------------------------------------------ */

typedef enum {
  STG_LOGSRC_NO_FILE = (1 << 0) /* memory and subscribers only, no
                                   <component>.log (e.g. for "supervisor",
                                   whose file stg_log writes) */
} stg_logsrc_flags_t;

/* The source for a component name ([A-Za-z0-9._-], 1-64 bytes), made on
 * first use; later calls return the same source. Sources live as long as
 * the store. Returns 0, UV_EINVAL for a bad name, or UV_ENOMEM. */
int stg_logstore_source(stg_logstore_t *s, const char *component,
                        stg_logsrc_t **out);
/* stg_logsrc_flags_t; set before the first record. */
void stg_logsrc_set_flags(stg_logsrc_t *src, unsigned flags);

/* Bytes read from a child's pipe. Complete lines become records at once;
 * the rest waits for more. A line longer than STG_LOG_MAX_LINE is split,
 * each piece but the last marked as continued. stream is OUT or ERR.
 * Bytes of another pid (a new child) first end the old child's partial
 * line. */
void stg_logsrc_feed(stg_logsrc_t *src, int pid, stg_log_stream_t stream,
                     const char *data, size_t len);
/* The pipe reached EOF: a final line without a newline becomes a record. */
void stg_logsrc_eof(stg_logsrc_t *src, int pid, stg_log_stream_t stream);
/* A note by the supervisor about the component (stream sys, the
 * supervisor's pid), e.g. "started pid 124". Newlines become spaces; the
 * text is cut at STG_LOG_MAX_LINE. */
void stg_logsrc_note(stg_logsrc_t *src, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* --- subscribers ------------------------------------------------------------- */

/* Gets one JSON object, newline-terminated (line[len - 1] == '\n', and
 * line[len] == '\0'), valid only during the call. When must is false the
 * callback may refuse it by returning UV_ENOBUFS (its queue is full).
 * A follower that refuses a new record is "behind": the store keeps its
 * place and pushes nothing more until the subscriber calls
 * stg_logsub_resume, which catches it up from the rings in capture order.
 * Records that leave the ring before it gets them are counted, and a
 * {"gap":N,...} object comes before the next record it gets. A tail record
 * refused in stg_logstore_subscribe is counted in a gap at once. When must
 * is true (gap and end objects, and the record right after a gap) it has
 * to take the line; its return value is ignored. Any other return is
 * treated as 0. The callback may call stg_logsub_cancel (on any
 * subscription); it must not feed, note into, or close the store, nor call
 * stg_logsub_resume. */
typedef int (*stg_logsub_deliver_cb)(void *arg, const char *line, size_t len,
                                     bool must);

typedef struct {
  const char *const *components; /* names to include (copied), n_components
                                    of them; a name with no source yet
                                    matches when its source appears */
  size_t n_components;           /* 0: every source, also later ones */
  uint64_t tail;                 /* send up to this many of the latest
                                    records of each component first, merged
                                    by time (the ring's byte cap limits
                                    what is there) */
  bool follow;                   /* then stream new records; else send
                                    {"end":true} after the tail and nothing
                                    more */
  stg_logsub_deliver_cb deliver; /* gets each object */
  void *arg;                     /* passed to deliver */
} stg_logsub_options_t;

/* Delivers the tail (and {"end":true} without follow) before it returns.
 * Returns 0 and *out, which the caller ends with stg_logsub_cancel (also
 * without follow), or UV_EINVAL / UV_ENOMEM. */
int stg_logstore_subscribe(stg_logstore_t *s, const stg_logsub_options_t *o,
                           stg_logsub_t **out);
/* The subscriber has room again (e.g. its queue fell below half its cap):
 * if it is behind, delivers the records it has not had, in capture order
 * (merged across components as live delivery orders them), after a gap
 * object for those that left the ring, until it refuses one again, it has
 * caught up (then live records are pushed to it again), or about 256 KiB
 * of objects went out in this call. Returns 1 when it is still behind (call
 * again when there is room, e.g. from the write callback of what this call
 * queued), 0 when it follows live (or is cancelled). Cheap when not
 * behind. */
int stg_logsub_resume(stg_logsub_t *sub);
/* Ends a subscription: deliver is not called again. */
void stg_logsub_cancel(stg_logsub_t *sub);

#endif
