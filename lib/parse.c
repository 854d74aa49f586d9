#include "parse.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

/* Reads an unsigned decimal; returns characters consumed, 0 if none, or
 * -1 on overflow. */
static int read_uint(const char *s, uint64_t *out) {
  uint64_t v = 0;
  int i = 0;
  while (s[i] >= '0' && s[i] <= '9') {
    unsigned d = (unsigned)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
    i++;
  }
  *out = v;
  return i;
}

static int mul_add(uint64_t *acc, uint64_t v, uint64_t mult) {
  if (mult != 0 && v > UINT64_MAX / mult)
    return UV_ERANGE;
  if (*acc > UINT64_MAX - v * mult)
    return UV_ERANGE;
  *acc += v * mult;
  return 0;
}

int stg_parse_duration(const char *s, uint64_t *out_ms) {
  static const struct {
    const char *unit;
    uint64_t ms;
  } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
  if (s == NULL || *s == '\0')
    return UV_EINVAL;
  if (strcmp(s, "0") == 0) {
    *out_ms = 0;
    return 0;
  }
  uint64_t total = 0;
  const char *p = s;
  while (*p) {
    uint64_t v;
    int n = read_uint(p, &v);
    if (n < 0)
      return UV_ERANGE;
    if (n == 0)
      return UV_EINVAL;
    p += n;
    size_t ulen = 0;
    while (isalpha((unsigned char)p[ulen]))
      ulen++;
    if (ulen == 0)
      return UV_EINVAL;
    uint64_t mult = 0;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
      if (strlen(units[i].unit) == ulen && strncmp(p, units[i].unit, ulen) == 0)
        mult = units[i].ms;
    }
    if (mult == 0)
      return UV_EINVAL;
    int rc = mul_add(&total, v, mult);
    if (rc)
      return rc;
    p += ulen;
  }
  *out_ms = total;
  return 0;
}

int stg_parse_size(const char *s, uint64_t *out_bytes) {
  static const struct {
    const char *unit;
    uint64_t mult;
  } units[] = {{"B", 1},
               {"KiB", 1ull << 10},
               {"MiB", 1ull << 20},
               {"GiB", 1ull << 30},
               {"TiB", 1ull << 40}};
  if (s == NULL || *s == '\0')
    return UV_EINVAL;
  if (strcmp(s, "0") == 0) {
    *out_bytes = 0;
    return 0;
  }
  uint64_t v;
  int n = read_uint(s, &v);
  if (n < 0)
    return UV_ERANGE;
  if (n == 0)
    return UV_EINVAL;
  const char *u = s + n;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strcmp(u, units[i].unit) == 0) {
      uint64_t total = 0;
      int rc = mul_add(&total, v, units[i].mult);
      if (rc)
        return rc;
      *out_bytes = total;
      return 0;
    }
  }
  return UV_EINVAL;
}

int stg_parse_bool(const char *s, bool *out) {
  static const char *const yes[] = {"yes", "true", "on", "1"};
  static const char *const no[] = {"no", "false", "off", "0"};
  if (s == NULL)
    return UV_EINVAL;
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(s, yes[i]) == 0) {
      *out = true;
      return 0;
    }
    if (strcasecmp(s, no[i]) == 0) {
      *out = false;
      return 0;
    }
  }
  return UV_EINVAL;
}

int stg_parse_int(const char *s, int64_t min, int64_t max, int64_t *out) {
  if (s == NULL || *s == '\0')
    return UV_EINVAL;
  int neg = 0;
  const char *p = s;
  if (*p == '-') {
    neg = 1;
    p++;
  }
  uint64_t v;
  int n = read_uint(p, &v);
  if (n < 0)
    return UV_ERANGE;
  if (n == 0 || p[n] != '\0')
    return UV_EINVAL;
  if (v > (uint64_t)INT64_MAX)
    return UV_ERANGE;
  int64_t r = neg ? -(int64_t)v : (int64_t)v;
  if (r < min || r > max)
    return UV_ERANGE;
  *out = r;
  return 0;
}

char *stg_format_duration(uint64_t ms, char *buf, unsigned len) {
  if (ms == 0) {
    snprintf(buf, len, "0");
    return buf;
  }
  static const struct {
    const char *unit;
    uint64_t ms;
  } units[] = {{"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
  size_t off = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < 4 && off < len; i++) {
    if (ms >= units[i].ms) {
      uint64_t q = ms / units[i].ms;
      ms -= q * units[i].ms;
      int n = snprintf(buf + off, len - off, "%llu%s", (unsigned long long)q,
                       units[i].unit);
      if (n < 0)
        break;
      off += (size_t)n;
    }
  }
  return buf;
}

char *stg_format_size(uint64_t bytes, char *buf, unsigned len) {
  static const char *const units[] = {"TiB", "GiB", "MiB", "KiB"};
  static const unsigned shifts[] = {40, 30, 20, 10};
  if (bytes == 0) {
    snprintf(buf, len, "0");
    return buf;
  }
  for (size_t i = 0; i < 4; i++) {
    uint64_t m = 1ull << shifts[i];
    if (bytes % m == 0) {
      snprintf(buf, len, "%llu%s", (unsigned long long)(bytes / m), units[i]);
      return buf;
    }
  }
  snprintf(buf, len, "%lluB", (unsigned long long)bytes);
  return buf;
}
