/* stg_log: one logging function for the whole binary.
 *
 * Messages go to stderr, to a file, or both. Each line carries a UTC
 * timestamp with microseconds, the level and the program name. Contract:
 * docs/internals/log.md.
 */
#ifndef STG_LOG_H
#define STG_LOG_H

#include <stdarg.h>

typedef enum {
  STG_LOG_ERROR = 0,
  STG_LOG_WARN = 1,
  STG_LOG_INFO = 2,
  STG_LOG_DEBUG = 3
} stg_log_level_t;

typedef enum {
  STG_LOG_SINK_STDERR = (1 << 0), /* write to standard error */
  STG_LOG_SINK_FILE = (1 << 1)    /* write to the file set by stg_log_open */
} stg_log_sink_t;

/* Name printed in every line, e.g. "supervisor". Copied. */
void stg_log_set_name(const char *name);
void stg_log_set_level(stg_log_level_t level);
stg_log_level_t stg_log_get_level(void);
/* Which sinks receive lines (default: stderr only). */
void stg_log_set_sinks(unsigned sinks);
/* Open (append) the file sink; replaces a file already open.
 * Returns 0 or -errno. */
int stg_log_open(const char *path);
void stg_log_close(void);

/* Parse "error", "warn", "info", "debug". Returns 0 or UV_EINVAL. */
int stg_log_level_parse(const char *s, stg_log_level_t *out);
const char *stg_log_level_name(stg_log_level_t level);

void stg_log(stg_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void stg_vlog(stg_log_level_t level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

#define stg_error(...) stg_log(STG_LOG_ERROR, __VA_ARGS__)
#define stg_warn(...) stg_log(STG_LOG_WARN, __VA_ARGS__)
#define stg_info(...) stg_log(STG_LOG_INFO, __VA_ARGS__)
#define stg_debug(...) stg_log(STG_LOG_DEBUG, __VA_ARGS__)

#endif
