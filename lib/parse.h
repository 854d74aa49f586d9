/* Strict parsers for the values found in config files, flags and the
 * environment. Contract: docs/internals/parse.md.
 *
 * Each returns 0 on success or UV_EINVAL (malformed) / UV_ERANGE (too big),
 * and leaves *out untouched on error.
 */
#ifndef STG_PARSE_H
#define STG_PARSE_H

#include <stdint.h>
#include <stdbool.h>

/* "250ms", "5s", "2m", "1h", or a sum of such terms without spaces
 * ("1m30s"). "0" alone is zero. Result in milliseconds. */
int stg_parse_duration(const char *s, uint64_t *out_ms);
/* "512KiB", "10MiB", "1GiB", "100B"; "0" alone is zero. Result in bytes. */
int stg_parse_size(const char *s, uint64_t *out_bytes);
/* yes/no, true/false, on/off, 1/0 (case-insensitive). */
int stg_parse_bool(const char *s, bool *out);
/* A decimal integer in [min, max]. */
int stg_parse_int(const char *s, int64_t min, int64_t max, int64_t *out);

/* Formats for display: "1m30s", "250ms", "10MiB". Return buf. */
char *stg_format_duration(uint64_t ms, char *buf, unsigned len);
char *stg_format_size(uint64_t bytes, char *buf, unsigned len);

#endif
