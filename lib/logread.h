/* The log record format of logs/<component>.log, and reading it back:
 * the last N records of a component across its rotated files, records since
 * a time, several components merged by capture time. Used by the CLI when
 * the supervisor is not running, by lib/logstore (which writes the format),
 * and by tests. Contract: docs/internals/logs.md.
 *
 *   2026-11-21T05:39:11.082088Z 124 out listening on 127.0.0.1:7234
 *   ^ capture time, UTC, µs     ^pid ^stream ^ the line, without its newline
 *
 * logs/supervisor.log is written by stg_log (`TS LEVEL NAME: text`); its
 * lines parse as stream `sys`, pid 0, text = everything after the time.
 */
#ifndef STG_LOGREAD_H
#define STG_LOGREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A line longer than this is split into pieces of this size; every piece
 * but the last is marked as continued ("out+" / "err+"). */
#define STG_LOG_MAX_LINE 16384

/* Room for a formatted timestamp, "2026-11-21T05:39:11.082088Z" and NUL. */
#define STG_LOG_TS_LEN 28

typedef enum {
  STG_LOGSTREAM_OUT = 0, /* the child's stdout: "out" */
  STG_LOGSTREAM_ERR = 1, /* the child's stderr: "err" */
  STG_LOGSTREAM_SYS = 2  /* a note by the supervisor: "sys" */
} stg_log_stream_t;

/* "out", "err", "sys", or with cont "out+", "err+" ("sys" has no '+'). */
const char *stg_log_stream_name(stg_log_stream_t stream, bool cont);
/* The inverse; returns 0 or UV_EINVAL. */
int stg_log_stream_parse(const char *s, size_t len, stg_log_stream_t *stream,
                         bool *cont);

/* Formats microseconds since the epoch as above; returns buf. */
char *stg_log_format_ts(uint64_t us, char buf[STG_LOG_TS_LEN]);
/* Parses exactly "YYYY-MM-DDTHH:MM:SS.ffffffZ" (the fraction may have 0-9
 * digits; the record format always has 6). Returns 0 or UV_EINVAL. */
int stg_log_parse_ts(const char *s, size_t len, uint64_t *us);
/* A user's time for --since: an RFC 3339 time ("2026-11-21T05:39:11Z",
 * "2026-11-21 05:39", "...+01:00", a date alone means its midnight UTC; no
 * zone means UTC), or a duration before now_us ("10m", "1h30m"). Returns 0
 * or UV_EINVAL. */
int stg_log_parse_since(const char *s, uint64_t now_us, uint64_t *us);

/* Now, UTC, in microseconds since the epoch. */
uint64_t stg_log_now_us(void);

/* One record. component and text are borrowed or owned as said where the
 * record comes from. */
typedef struct {
  uint64_t us;              /* capture time */
  int pid;                  /* the child's pid (the supervisor's for sys) */
  stg_log_stream_t stream;
  bool cont;                /* a piece of a long line; the next piece follows */
  const char *component;    /* e.g. "server" */
  char *text;               /* the line, no newline; not NUL-terminated */
  size_t len;               /* bytes of text */
} stg_logrec_t;

/* Parses one line (without its newline). Returns 0 and fills *rec (text
 * points into line; component is left alone), or UV_EINVAL when the line
 * does not start with a timestamp. A stg_log line (`TS LEVEL NAME: text`)
 * and any other line that starts with a timestamp but is not a record
 * parse as stream sys, pid 0, text = everything after the first space. */
int stg_logread_parse_line(const char *line, size_t len, stg_logrec_t *rec);

typedef struct {
  const char *dir;       /* the logs directory */
  const char *component; /* reads <dir>/<component>.log and its .1 .. .N */
  int64_t tail;          /* keep only the last this many records; < 0: all
                            (up to max_records) */
  uint64_t since_us;     /* drop records captured before this; 0: none */
  size_t max_records;    /* hard cap on records kept (the oldest go);
                            0: 1000000 */
} stg_logread_options_t;

/* Records read into memory: each rec's text is owned; component points to
 * a copy owned by the list (or, after merge, by the source lists). */
typedef struct {
  stg_logrec_t *v;
  size_t n;
  size_t cap;
  size_t head;  /* internal: ring start while reading */
  char *component; /* owned copy of the component name */
} stg_logread_list_t;

/* Reads <component>.log.N .. .1 and <component>.log, oldest first (the
 * highest N such that .1 .. .N all exist), and keeps the records the
 * options ask for, oldest first. A missing file is no error (an empty
 * list). A line that does not start with a timestamp is kept as a sys
 * record with the time of the record before it. Returns 0 or a negative
 * error (the list is then empty). */
int stg_logread_component(const stg_logread_options_t *o, stg_logread_list_t *out);

/* Merges n lists into out by capture time, stably (equal times keep the
 * order of lists[], then of each list). The records are moved: the source
 * lists keep ownership of component names and must outlive out; their
 * texts now belong to out. Returns 0 or UV_ENOMEM. */
int stg_logread_merge(stg_logread_list_t *lists, size_t n, stg_logread_list_t *out);

/* Frees the texts the list owns, and its array. */
void stg_logread_list_free(stg_logread_list_t *l);

#endif
