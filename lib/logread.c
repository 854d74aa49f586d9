#include "logread.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "parse.h"

#define DEFAULT_MAX_RECORDS 1000000u

/* --- streams and times ------------------------------------------------------ */

const char *stg_log_stream_name(stg_log_stream_t stream, bool cont) {
  switch (stream) {
  case STG_LOGSTREAM_OUT:
    return cont ? "out+" : "out";
  case STG_LOGSTREAM_ERR:
    return cont ? "err+" : "err";
  case STG_LOGSTREAM_SYS:
    return "sys";
  }
  return "?";
}

int stg_log_stream_parse(const char *s, size_t len, stg_log_stream_t *stream,
                         bool *cont) {
  static const struct {
    const char *name;
    stg_log_stream_t stream;
    bool cont;
  } t[] = {{"out", STG_LOGSTREAM_OUT, false}, {"err", STG_LOGSTREAM_ERR, false},
           {"sys", STG_LOGSTREAM_SYS, false}, {"out+", STG_LOGSTREAM_OUT, true},
           {"err+", STG_LOGSTREAM_ERR, true}};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    if (strlen(t[i].name) == len && memcmp(t[i].name, s, len) == 0) {
      *stream = t[i].stream;
      *cont = t[i].cont;
      return 0;
    }
  }
  return UV_EINVAL;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

char *stg_log_format_ts(uint64_t us, char buf[STG_LOG_TS_LEN]) {
  time_t sec = (time_t)(us / 1000000u);
  struct tm tm;
  gmtime_r(&sec, &tm);
  char tmp[64];
  snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ",
           (tm.tm_year + 1900) % 10000, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
           tm.tm_min, tm.tm_sec, (unsigned)(us % 1000000u));
  memcpy(buf, tmp, STG_LOG_TS_LEN - 1);
  buf[STG_LOG_TS_LEN - 1] = '\0';
  return buf;
}

/* n digits at s into *v; 0 or -1. */
static int digits(const char *s, size_t n, unsigned *v) {
  unsigned x = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    x = x * 10 + (unsigned)(s[i] - '0');
  }
  *v = x;
  return 0;
}

/* Parses "YYYY-MM-DD[(T| )HH:MM[:SS[.frac]]][Z|(+|-)HH:MM]" at s (len bytes,
 * all of them). With strict, only the record form is accepted. */
static int parse_time(const char *s, size_t len, bool strict, uint64_t *out) {
  unsigned y, mo, d, h = 0, mi = 0, sec = 0, frac_us = 0;
  size_t i = 0;
  if (len < 10 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) ||
      s[7] != '-' || digits(s + 8, 2, &d))
    return UV_EINVAL;
  i = 10;
  bool have_time = false;
  if (i < len && (s[i] == 'T' || (!strict && (s[i] == ' ' || s[i] == 't')))) {
    if (len < i + 6 || digits(s + i + 1, 2, &h) || s[i + 3] != ':' ||
        digits(s + i + 4, 2, &mi))
      return UV_EINVAL;
    i += 6;
    have_time = true;
    if (i < len && s[i] == ':') {
      if (len < i + 3 || digits(s + i + 1, 2, &sec))
        return UV_EINVAL;
      i += 3;
      if (i < len && s[i] == '.') {
        i++;
        size_t nd = 0;
        unsigned scale = 100000;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
          if (nd < 6)
            frac_us += (unsigned)(s[i] - '0') * scale;
          scale /= 10;
          nd++;
          i++;
        }
        if (nd == 0 || nd > 9)
          return UV_EINVAL;
      }
    } else if (strict) {
      return UV_EINVAL;
    }
  } else if (strict) {
    return UV_EINVAL;
  }
  int64_t offset_s = 0;
  if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
    i++;
  } else if (!strict && have_time && i < len && (s[i] == '+' || s[i] == '-')) {
    unsigned oh, om;
    if (len < i + 6 || digits(s + i + 1, 2, &oh) || s[i + 3] != ':' ||
        digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
      return UV_EINVAL;
    offset_s = (int64_t)(oh * 3600 + om * 60) * (s[i] == '+' ? 1 : -1);
    i += 6;
  } else if (strict) {
    return UV_EINVAL;
  }
  if (i != len)
    return UV_EINVAL;
  if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
      sec > 60)
    return UV_EINVAL;
  int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset_s;
  if (t < 0)
    return UV_EINVAL;
  *out = (uint64_t)t * 1000000u + frac_us;
  return 0;
}

int stg_log_parse_ts(const char *s, size_t len, uint64_t *us) {
  return parse_time(s, len, true, us);
}

int stg_log_parse_since(const char *s, uint64_t now_us, uint64_t *us) {
  uint64_t ms;
  if (stg_parse_duration(s, &ms) == 0) {
    uint64_t d = ms * 1000u;
    *us = d < now_us ? now_us - d : 0;
    return 0;
  }
  return parse_time(s, strlen(s), false, us);
}

uint64_t stg_log_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* --- lines ---------------------------------------------------------------------- */

int stg_logread_parse_line(const char *line, size_t len, stg_logrec_t *rec) {
  const char *sp = memchr(line, ' ', len);
  size_t tslen = sp ? (size_t)(sp - line) : len;
  uint64_t us;
  if (stg_log_parse_ts(line, tslen, &us) != 0)
    return UV_EINVAL;
  rec->us = us;
  rec->cont = false;
  /* The record form: TS PID STREAM TEXT. */
  if (sp != NULL) {
    const char *p = sp + 1, *end = line + len;
    const char *sp2 = memchr(p, ' ', (size_t)(end - p));
    unsigned pid;
    if (sp2 != NULL && sp2 > p && sp2 - p <= 9 && digits(p, (size_t)(sp2 - p), &pid) == 0) {
      const char *q = sp2 + 1;
      const char *sp3 = memchr(q, ' ', (size_t)(end - q));
      size_t slen = sp3 ? (size_t)(sp3 - q) : (size_t)(end - q);
      if (stg_log_stream_parse(q, slen, &rec->stream, &rec->cont) == 0) {
        rec->pid = (int)pid;
        rec->text = sp3 ? (char *)sp3 + 1 : (char *)end;
        rec->len = sp3 ? (size_t)(end - sp3 - 1) : 0;
        return 0;
      }
    }
  }
  /* Anything else that starts with a time: a stg_log line. */
  rec->pid = 0;
  rec->stream = STG_LOGSTREAM_SYS;
  rec->text = sp ? (char *)sp + 1 : (char *)line + len;
  rec->len = sp ? len - tslen - 1 : 0;
  return 0;
}

/* --- reading files -------------------------------------------------------------- */

static stg_logrec_t *ring_at(stg_logread_list_t *l, size_t i) {
  return &l->v[(l->head + i) % l->cap];
}

/* Appends a copy of rec, dropping the oldest when limit records are kept. */
static int keep_rec(stg_logread_list_t *l, const stg_logrec_t *rec, size_t limit) {
  if (limit == 0)
    return 0;
  char *t = malloc(rec->len ? rec->len : 1);
  if (t == NULL)
    return UV_ENOMEM;
  memcpy(t, rec->text, rec->len);
  if (l->n == limit) {
    stg_logrec_t *old = ring_at(l, 0);
    free(old->text);
    *old = *rec;
    old->text = t;
    old->component = l->component;
    l->head = (l->head + 1) % l->cap;
    return 0;
  }
  if (l->n == l->cap) {
    /* Grow; the ring is only ever full here before it wraps (n < limit), so
     * head is 0. */
    size_t nc = l->cap ? l->cap * 2 : 64;
    if (nc > limit)
      nc = limit;
    stg_logrec_t *nv = realloc(l->v, nc * sizeof *nv);
    if (nv == NULL) {
      free(t);
      return UV_ENOMEM;
    }
    l->v = nv;
    l->cap = nc;
  }
  stg_logrec_t *slot = ring_at(l, l->n++);
  *slot = *rec;
  slot->text = t;
  slot->component = l->component;
  return 0;
}

static int read_file(const char *path, const stg_logread_options_t *o, size_t limit,
                     uint64_t *last_us, stg_logread_list_t *l) {
  FILE *f = fopen(path, "re");
  if (f == NULL)
    return errno == ENOENT ? 0 : -errno;
  int rc = 0;
  char *line = NULL;
  size_t lcap = 0;
  ssize_t n;
  while ((n = getline(&line, &lcap, f)) > 0) {
    size_t len = (size_t)n;
    if (line[len - 1] == '\n')
      len--;
    stg_logrec_t rec;
    memset(&rec, 0, sizeof rec);
    if (stg_logread_parse_line(line, len, &rec) != 0) {
      /* Not a record (e.g. a stg_log message with a newline in it): keep
       * it, with the time of the record before. */
      rec.us = *last_us;
      rec.stream = STG_LOGSTREAM_SYS;
      rec.text = line;
      rec.len = len;
    }
    *last_us = rec.us;
    if (o->since_us && rec.us < o->since_us)
      continue;
    rc = keep_rec(l, &rec, limit);
    if (rc != 0)
      break;
  }
  if (rc == 0 && ferror(f))
    rc = UV_EIO;
  free(line);
  fclose(f);
  return rc;
}

int stg_logread_component(const stg_logread_options_t *o, stg_logread_list_t *out) {
  memset(out, 0, sizeof *out);
  int rc = 0;
  char path[4096];
  size_t limit = o->max_records ? o->max_records : DEFAULT_MAX_RECORDS;
  if (o->tail >= 0 && (uint64_t)o->tail < limit)
    limit = (size_t)o->tail;
  out->component = strdup(o->component);
  if (out->component == NULL)
    return UV_ENOMEM;
  /* The oldest rotated file: the highest N with .1 .. .N all present. */
  unsigned top = 0;
  for (;;) {
    struct stat st;
    if (snprintf(path, sizeof path, "%s/%s.log.%u", o->dir, o->component, top + 1) >=
        (int)sizeof path) {
      rc = UV_ENAMETOOLONG;
      goto out;
    }
    if (stat(path, &st) != 0)
      break;
    top++;
  }
  uint64_t last_us = 0;
  for (unsigned i = top + 1; i-- > 0;) {
    if (i)
      snprintf(path, sizeof path, "%s/%s.log.%u", o->dir, o->component, i);
    else
      snprintf(path, sizeof path, "%s/%s.log", o->dir, o->component);
    rc = read_file(path, o, limit, &last_us, out);
    if (rc != 0)
      goto out;
  }
  /* Unwrap the ring so v[0..n) is oldest first. */
  if (out->head != 0) {
    stg_logrec_t *nv = malloc(out->n * sizeof *nv);
    if (nv == NULL) {
      rc = UV_ENOMEM;
      goto out;
    }
    for (size_t i = 0; i < out->n; i++)
      nv[i] = *ring_at(out, i);
    free(out->v);
    out->v = nv;
    out->cap = out->n;
    out->head = 0;
  }
out:
  if (rc != 0) {
    char *c = out->component;
    out->component = NULL;
    stg_logread_list_free(out);
    free(c);
  }
  return rc;
}

typedef struct {
  stg_logrec_t rec;
  size_t list, pos;
} merge_item_t;

static int merge_cmp(const void *a, const void *b) {
  const merge_item_t *x = a, *y = b;
  if (x->rec.us != y->rec.us)
    return x->rec.us < y->rec.us ? -1 : 1;
  if (x->list != y->list)
    return x->list < y->list ? -1 : 1;
  return x->pos < y->pos ? -1 : x->pos > y->pos;
}

int stg_logread_merge(stg_logread_list_t *lists, size_t n, stg_logread_list_t *out) {
  memset(out, 0, sizeof *out);
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += lists[i].n;
  if (total == 0)
    return 0;
  merge_item_t *items = malloc(total * sizeof *items);
  out->v = malloc(total * sizeof *out->v);
  if (items == NULL || out->v == NULL) {
    free(items);
    free(out->v);
    out->v = NULL;
    return UV_ENOMEM;
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < lists[i].n; j++)
      items[k++] = (merge_item_t){*ring_at(&lists[i], j), i, j};
    lists[i].n = 0;
    lists[i].head = 0;
  }
  qsort(items, total, sizeof *items, merge_cmp);
  for (size_t i = 0; i < total; i++)
    out->v[i] = items[i].rec;
  out->n = out->cap = total;
  free(items);
  return 0;
}

void stg_logread_list_free(stg_logread_list_t *l) {
  for (size_t i = 0; i < l->n; i++)
    free(ring_at(l, i)->text);
  free(l->v);
  free(l->component);
  memset(l, 0, sizeof *l);
}
