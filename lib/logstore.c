#include "logstore.h"
#include "utf8.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

#define DEFAULT_QUEUE_CAP (4u << 20)
#define DEFAULT_RING_CAP (8u << 20)
#define CATCHUP_STEP (256u << 10) /* JSON bytes one stg_logsub_resume call delivers */
#define REC_OVERHEAD 48u     /* queue bytes of a record beyond its text */
#define NOTE_ROOM 96u        /* queue bytes a "dropped N lines" note needs */
#define JSON_MAX (6u * STG_LOG_MAX_LINE + 1024u) /* a record's object, worst case */
#define NAME_MAX_LEN 64
#define WBUF_CAP (64u << 10) /* the writer's lines per write(); a record fits */
#define CLOCK_STEP_US 1000000u /* a step back of the clock this big is believed */

/* One record, shared by the ring (loop), the queue (writer) and delivery;
 * freed by whoever drops the last reference. */
typedef struct rec_s {
  struct rec_s *rnext; /* ring order (loop only) */
  struct rec_s *gprev, *gnext; /* the store's list of every ring's records,
                                  in capture order (loop only) */
  uint64_t gseq;       /* position in that order, store-wide (loop only) */
  struct rec_s *qnext; /* queue order (under the mutex, then the writer's) */
  unsigned refs;       /* atomic */
  stg_logsrc_t *src;
  uint64_t us;
  uint64_t seq;
  int pid;
  stg_log_stream_t stream;
  bool cont;
  size_t len;
  char text[];
} rec_t;

typedef struct {
  char *buf; /* STG_LOG_MAX_LINE bytes */
  size_t len;
  int pid;
} partial_t;

typedef struct {
  stg_logsrc_t *src;
  uint64_t count;
  uint64_t first_us; /* capture time of the first record not delivered */
} gap_t;

struct stg_logsrc_s {
  stg_logstore_t *store;
  stg_logsrc_t *next; /* the store's list (loop only) */
  char name[NAME_MAX_LEN + 1];
  unsigned flags;
  uint64_t seq;
  partial_t part[2]; /* OUT, ERR */
  rec_t *rhead, *rtail;
  size_t rcount, rbytes;
  uint64_t qdropped; /* dropped from the queue, not yet noted (loop) */
  /* Writer thread only: */
  stg_logsrc_t *wnext; /* the writer's list of sources it has seen */
  bool wseen;
  int fd;
  uint64_t fsize;
  uint64_t disk_dropped; /* not written since the last success */
  bool failing;
  char path[4096];
};

struct stg_logsub_s {
  stg_logstore_t *store;
  stg_logsub_t *prev, *next;
  char **names; /* NULL: every source */
  size_t n_names;
  bool follow;
  bool cancelled;
  bool linked;
  stg_logsub_deliver_cb deliver;
  void *arg;
  gap_t *gaps;
  size_t n_gaps, cap_gaps;
  /* Behind: it refused a record; live records are not pushed to it, and
   * stg_logsub_resume catches it up from cursor, the next record (of any
   * source) in the store's list it has not had; NULL: none yet. */
  bool behind;
  rec_t *cursor;
};

struct stg_logstore_s {
  uv_loop_t *loop;
  uv_async_t async;
  uv_thread_t thread;
  uv_mutex_t mu;
  uv_cond_t cond;
  char *dir;
  size_t queue_cap;
  size_t ring_cap;
  /* Under mu: */
  uint64_t max_size;
  unsigned keep;
  bool reopen;
  bool closing;
  bool thread_done;
  bool want_room;
  uint64_t progress_ms;     /* the writer last took a batch or wrote (hrtime) */
  bool in_batch;            /* the writer is working on a batch */
  rec_t *qhead, *qtail;
  size_t qbytes; /* queued and in the writer's hands */
  uint64_t disk_dropped;
  int err;                  /* the writer's latest failure, to report */
  char err_path[4096];
  /* Loop only: */
  stg_logsrc_t *sources;
  rec_t *ghead, *gtail; /* every ring's records, in capture order */
  uint64_t gseq;
  stg_logsub_t *subs;
  int depth;      /* nested deliveries; cancelled subs are freed at 0 */
  bool need_sweep;
  bool closed;    /* stg_logstore_close was called */
  uint64_t last_us;
  uint64_t records;
  uint64_t queue_dropped;
  void (*done)(void *arg);
  void *done_arg;
  void (*room)(void *arg);  /* stg_logstore_on_room */
  void *room_arg;
  /* Writer only: */
  stg_logsrc_t *wsources;
  char *wbuf;           /* lines of wsrc not yet written, WBUF_CAP bytes */
  size_t wlen;
  stg_logsrc_t *wsrc;
  uint64_t wrecs;       /* records in wbuf (a drop note is not one) */
  uint64_t wnoted;      /* the count in wbuf's "dropped N lines" note */
  uint64_t wdropped;    /* records dropped, not yet added to disk_dropped */
  uint64_t ts_sec;      /* the second ts_prefix shows */
  char ts_prefix[24];   /* "YYYY-MM-DDTHH:MM:SS" of ts_sec */
};

/* --- records ------------------------------------------------------------------- */

static rec_t *rec_new(stg_logsrc_t *src, const char *text, size_t len) {
  rec_t *r = malloc(sizeof *r + (len ? len : 1));
  if (r == NULL)
    return NULL;
  memset(r, 0, sizeof *r);
  r->refs = 1;
  r->src = src;
  r->len = len;
  memcpy(r->text, text, len);
  return r;
}

static void rec_ref(rec_t *r) { __atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED); }

static void rec_unref(rec_t *r) {
  if (__atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0)
    free(r);
}

static size_t rec_qsize(const rec_t *r) { return r->len + REC_OVERHEAD; }

/* --- JSON --------------------------------------------------------------------- */

typedef struct {
  char *p;
  size_t len, cap;
  bool failed;
} gbuf_t;

static void gb_put(gbuf_t *b, const void *s, size_t n) {
  if (b->failed)
    return;
  if (b->len + n > b->cap) {
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->len + n)
      nc *= 2;
    if (nc > JSON_MAX)
      nc = JSON_MAX;
    char *np = nc >= b->len + n ? realloc(b->p, nc) : NULL;
    if (np == NULL) {
      b->failed = true;
      return;
    }
    b->p = np;
    b->cap = nc;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void gb_printf(gbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void gb_printf(gbuf_t *b, const char *fmt, ...) {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof tmp) {
    b->failed = true;
    return;
  }
  gb_put(b, tmp, (size_t)n);
}

/* A JSON string; bytes that are not UTF-8 become U+FFFD. */
static void gb_jstr(gbuf_t *b, const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  gb_put(b, "\"", 1);
  size_t run = 0; /* bytes at p[i - run .. i) to copy as they are */
  for (size_t i = 0; i < n;) {
    unsigned char c = p[i];
    const char *esc = NULL;
    char ubuf[8];
    size_t skip = 1;
    if (c >= 0x80) {
      size_t l = stg_utf8_seq(p + i, n - i);
      if (l) {
        i += l;
        run += l;
        continue;
      }
      esc = "\xEF\xBF\xBD";
    } else if (c == '"')
      esc = "\\\"";
    else if (c == '\\')
      esc = "\\\\";
    else if (c == '\n')
      esc = "\\n";
    else if (c == '\r')
      esc = "\\r";
    else if (c == '\t')
      esc = "\\t";
    else if (c < 0x20 || c == 0x7F) {
      snprintf(ubuf, sizeof ubuf, "\\u%04x", c);
      esc = ubuf;
    }
    if (esc == NULL) {
      i++;
      run++;
      continue;
    }
    gb_put(b, p + i - run, run);
    run = 0;
    gb_put(b, esc, strlen(esc));
    i += skip;
  }
  gb_put(b, p + n - run, run);
  gb_put(b, "\"", 1);
}

static void json_rec(gbuf_t *b, const rec_t *r) {
  char ts[STG_LOG_TS_LEN];
  gb_printf(b, "{\"ts\":\"%s\",\"us\":%llu,\"seq\":%llu,\"component\":",
            stg_log_format_ts(r->us, ts), (unsigned long long)r->us,
            (unsigned long long)r->seq);
  gb_jstr(b, r->src->name, strlen(r->src->name));
  gb_printf(b, ",\"pid\":%d,\"stream\":\"%s\",\"line\":", r->pid,
            stg_log_stream_name(r->stream, r->cont));
  gb_jstr(b, r->text, r->len);
  gb_put(b, "}\n", 3); /* and a NUL, not counted */
  b->len--;
}

static void json_gap(gbuf_t *b, const gap_t *g) {
  char ts[STG_LOG_TS_LEN];
  gb_printf(b, "{\"gap\":%llu,\"component\":", (unsigned long long)g->count);
  gb_jstr(b, g->src->name, strlen(g->src->name));
  gb_printf(b, ",\"ts\":\"%s\",\"us\":%llu}\n", stg_log_format_ts(g->first_us, ts),
            (unsigned long long)g->first_us);
  gb_put(b, "", 1); /* a NUL, not counted */
  b->len--;
}

/* --- delivery -------------------------------------------------------------- */

static bool sub_wants(const stg_logsub_t *sub, const stg_logsrc_t *src) {
  if (sub->names == NULL)
    return true;
  for (size_t i = 0; i < sub->n_names; i++)
    if (strcmp(sub->names[i], src->name) == 0)
      return true;
  return false;
}

static void sub_free(stg_logsub_t *sub) {
  for (size_t i = 0; i < sub->n_names; i++)
    free(sub->names[i]);
  free(sub->names);
  free(sub->gaps);
  free(sub);
}

static void sub_unlink(stg_logsub_t *sub) {
  stg_logstore_t *s = sub->store;
  if (!sub->linked)
    return;
  if (sub->prev)
    sub->prev->next = sub->next;
  else
    s->subs = sub->next;
  if (sub->next)
    sub->next->prev = sub->prev;
  sub->linked = false;
}

static void sweep(stg_logstore_t *s) {
  if (s->depth > 0 || !s->need_sweep)
    return;
  s->need_sweep = false;
  for (stg_logsub_t *sub = s->subs, *next; sub; sub = next) {
    next = sub->next;
    if (sub->cancelled) {
      sub_unlink(sub);
      sub_free(sub);
    }
  }
}

/* Counts r as not delivered to sub. */
static void add_gap(stg_logsub_t *sub, const rec_t *r) {
  for (size_t i = 0; i < sub->n_gaps; i++) {
    if (sub->gaps[i].src == r->src) {
      sub->gaps[i].count++;
      return;
    }
  }
  if (sub->n_gaps == sub->cap_gaps) {
    size_t nc = sub->cap_gaps ? sub->cap_gaps * 2 : 4;
    gap_t *ng = realloc(sub->gaps, nc * sizeof *ng);
    if (ng == NULL)
      return; /* the gap goes unreported; the records are in the files */
    sub->gaps = ng;
    sub->cap_gaps = nc;
  }
  sub->gaps[sub->n_gaps++] = (gap_t){r->src, 1, r->us};
}

/* Delivers the pending gap objects; the first one may be refused unless
 * must. Returns false when it was refused (or the sub was cancelled). */
static bool flush_gaps(stg_logsub_t *sub, bool must) {
  for (size_t i = 0; i < sub->n_gaps; i++) {
    gbuf_t b = {0};
    json_gap(&b, &sub->gaps[i]);
    int rc = b.failed ? UV_ENOMEM : sub->deliver(sub->arg, b.p, b.len, must || i > 0);
    free(b.p);
    if (sub->cancelled)
      return false;
    if (rc == UV_ENOBUFS && !must && i == 0)
      return false;
  }
  sub->n_gaps = 0;
  return true;
}

/* Delivers one record (json: its object, made once by the caller), after
 * the pending gap objects. Returns 0 (delivered, or counted in a gap when
 * its object could not be made), or UV_ENOBUFS when the subscriber refused
 * it: then neither it nor a gap object was delivered. */
static int deliver_rec(stg_logsub_t *sub, rec_t *r, const gbuf_t *json) {
  if (sub->cancelled)
    return 0;
  if (json->failed) {
    add_gap(sub, r);
    return 0;
  }
  bool must = false;
  if (sub->n_gaps > 0) {
    if (!flush_gaps(sub, false))
      return sub->cancelled ? 0 : UV_ENOBUFS;
    must = true;
  }
  int rc = sub->deliver(sub->arg, json->p, json->len, must);
  return rc == UV_ENOBUFS && !must && !sub->cancelled ? UV_ENOBUFS : 0;
}

/* Delivers a new record r to the subscribers that are not behind; one that
 * refuses it is behind from r on. */
static void fanout(stg_logstore_t *s, rec_t *r) {
  gbuf_t json = {0};
  bool made = false;
  s->depth++;
  for (stg_logsub_t *sub = s->subs; sub; sub = sub->next) {
    if (sub->cancelled || !sub->follow || sub->behind || !sub_wants(sub, r->src))
      continue;
    if (!made) {
      json_rec(&json, r);
      made = true;
    }
    if (deliver_rec(sub, r, &json) == UV_ENOBUFS) {
      sub->behind = true;
      sub->cursor = r;
    }
  }
  s->depth--;
  free(json.p);
  sweep(s);
}

/* --- making records -------------------------------------------------------- */

/* Takes the oldest record out of src's ring (and the store's list). A
 * subscriber that is behind and has not had it yet counts it in a gap. */
static void ring_evict(stg_logsrc_t *src) {
  stg_logstore_t *s = src->store;
  rec_t *old = src->rhead;
  for (stg_logsub_t *sub = s->subs; sub; sub = sub->next) {
    if (sub->cancelled || !sub->behind || sub->cursor == NULL ||
        old->gseq < sub->cursor->gseq)
      continue;
    if (sub_wants(sub, src))
      add_gap(sub, old);
    if (sub->cursor == old)
      sub->cursor = old->gnext;
  }
  src->rhead = old->rnext;
  src->rcount--;
  src->rbytes -= sizeof *old + old->len;
  if (old->gprev)
    old->gprev->gnext = old->gnext;
  else
    s->ghead = old->gnext;
  if (old->gnext)
    old->gnext->gprev = old->gprev;
  else
    s->gtail = old->gprev;
  rec_unref(old);
}

static void ring_push(stg_logsrc_t *src, rec_t *r) {
  stg_logstore_t *s = src->store;
  rec_ref(r);
  if (src->rtail)
    src->rtail->rnext = r;
  else
    src->rhead = r;
  src->rtail = r;
  src->rcount++;
  src->rbytes += sizeof *r + r->len;
  r->gseq = ++s->gseq;
  r->gprev = s->gtail;
  if (s->gtail)
    s->gtail->gnext = r;
  else
    s->ghead = r;
  s->gtail = r;
  /* A subscriber that is behind but has had everything goes on with r. */
  for (stg_logsub_t *sub = s->subs; sub; sub = sub->next)
    if (sub->behind && sub->cursor == NULL && !sub->cancelled)
      sub->cursor = r;
  while (src->rbytes > s->ring_cap && src->rhead != src->rtail)
    ring_evict(src);
}

/* Queues r for the writer, or drops and counts it. force: ignore the cap. */
static void enqueue(stg_logsrc_t *src, rec_t *r, bool force) {
  stg_logstore_t *s = src->store;
  size_t sz = rec_qsize(r);
  uv_mutex_lock(&s->mu);
  if (force || s->qbytes == 0 || s->qbytes + sz <= s->queue_cap) {
    rec_ref(r);
    r->qnext = NULL;
    if (s->qtail)
      s->qtail->qnext = r;
    else
      s->qhead = r;
    s->qtail = r;
    s->qbytes += sz;
    uv_cond_signal(&s->cond);
  } else {
    src->qdropped++;
    s->queue_dropped++;
    s->want_room = true;
  }
  uv_mutex_unlock(&s->mu);
}

static void emit(stg_logsrc_t *src, int pid, stg_log_stream_t stream, bool cont,
                 const char *text, size_t len);

/* Writes the "dropped N lines" note when the queue has room for it (or
 * force). */
static void note_drops(stg_logsrc_t *src, bool force) {
  stg_logstore_t *s = src->store;
  if (src->qdropped == 0)
    return;
  uv_mutex_lock(&s->mu);
  bool room = force || s->qbytes == 0 || s->qbytes + NOTE_ROOM <= s->queue_cap;
  uv_mutex_unlock(&s->mu);
  if (!room)
    return;
  char text[64];
  int n = snprintf(text, sizeof text, "dropped %llu lines",
                   (unsigned long long)src->qdropped);
  src->qdropped = 0;
  emit(src, (int)getpid(), STG_LOGSTREAM_SYS, false, text, (size_t)n);
}

static void emit(stg_logsrc_t *src, int pid, stg_log_stream_t stream, bool cont,
                 const char *text, size_t len) {
  stg_logstore_t *s = src->store;
  if (src->qdropped > 0)
    note_drops(src, s->closed);
  rec_t *r = rec_new(src, text, len);
  if (r == NULL) {
    /* Out of memory: as good as a full queue. */
    src->qdropped++;
    s->queue_dropped++;
    return;
  }
  /* Strictly increasing, so that the merge order is the capture order; but
   * a clock set back by more than a second is followed, not outwaited. */
  uint64_t us = stg_log_now_us();
  if (us <= s->last_us && s->last_us - us < CLOCK_STEP_US)
    us = s->last_us + 1;
  s->last_us = us;
  r->us = us;
  r->seq = ++src->seq;
  r->pid = pid;
  r->stream = stream;
  r->cont = cont;
  s->records++;
  ring_push(src, r);
  if (!(src->flags & STG_LOGSRC_NO_FILE))
    enqueue(src, r, s->closed);
  fanout(s, r);
  rec_unref(r);
}

/* --- sources ------------------------------------------------------------------ */

static bool name_ok(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > NAME_MAX_LEN || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '-'))
      return false;
  }
  return true;
}

int stg_logstore_source(stg_logstore_t *s, const char *component, stg_logsrc_t **out) {
  assert(!s->closed);
  *out = NULL;
  if (!name_ok(component))
    return UV_EINVAL;
  stg_logsrc_t **tail = &s->sources;
  for (stg_logsrc_t *src = s->sources; src; src = src->next) {
    if (strcmp(src->name, component) == 0) {
      *out = src;
      return 0;
    }
    tail = &src->next;
  }
  stg_logsrc_t *src = calloc(1, sizeof *src);
  if (src == NULL)
    return UV_ENOMEM;
  src->part[0].buf = malloc(STG_LOG_MAX_LINE);
  src->part[1].buf = malloc(STG_LOG_MAX_LINE);
  if (src->part[0].buf == NULL || src->part[1].buf == NULL ||
      snprintf(src->path, sizeof src->path, "%s/%s.log", s->dir, component) >=
          (int)sizeof src->path - 8) {
    int rc = src->part[0].buf && src->part[1].buf ? UV_ENAMETOOLONG : UV_ENOMEM;
    free(src->part[0].buf);
    free(src->part[1].buf);
    free(src);
    return rc;
  }
  src->store = s;
  src->fd = -1;
  snprintf(src->name, sizeof src->name, "%s", component);
  *tail = src;
  *out = src;
  return 0;
}

void stg_logsrc_set_flags(stg_logsrc_t *src, unsigned flags) { src->flags = flags; }

static void flush_partial(stg_logsrc_t *src, stg_log_stream_t stream, bool at_eof) {
  partial_t *p = &src->part[stream];
  if (p->len == 0)
    return;
  emit(src, p->pid, stream, false, p->buf, p->len);
  p->len = 0;
  (void)at_eof;
}

void stg_logsrc_feed(stg_logsrc_t *src, int pid, stg_log_stream_t stream,
                     const char *data, size_t len) {
  assert(stream == STG_LOGSTREAM_OUT || stream == STG_LOGSTREAM_ERR);
  assert(!src->store->closed);
  partial_t *p = &src->part[stream];
  if (p->len > 0 && p->pid != pid)
    flush_partial(src, stream, true);
  p->pid = pid;
  size_t i = 0;
  while (i < len) {
    const char *nl = memchr(data + i, '\n', len - i);
    size_t end = nl ? (size_t)(nl - data) : len;
    while (i < end) {
      /* A full piece and more bytes of the same line: it continues. */
      if (p->len == STG_LOG_MAX_LINE) {
        emit(src, pid, stream, true, p->buf, p->len);
        p->len = 0;
      }
      size_t take = end - i;
      if (take > STG_LOG_MAX_LINE - p->len)
        take = STG_LOG_MAX_LINE - p->len;
      memcpy(p->buf + p->len, data + i, take);
      p->len += take;
      i += take;
    }
    if (nl == NULL)
      break;
    emit(src, pid, stream, false, p->buf, p->len);
    p->len = 0;
    i = end + 1;
  }
}

void stg_logsrc_eof(stg_logsrc_t *src, int pid, stg_log_stream_t stream) {
  assert(stream == STG_LOGSTREAM_OUT || stream == STG_LOGSTREAM_ERR);
  partial_t *p = &src->part[stream];
  if (p->pid == pid)
    flush_partial(src, stream, true);
}

void stg_logsrc_note(stg_logsrc_t *src, const char *fmt, ...) {
  assert(!src->store->closed);
  char *buf = malloc(STG_LOG_MAX_LINE + 1);
  if (buf == NULL)
    return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, STG_LOG_MAX_LINE + 1, fmt, ap);
  va_end(ap);
  if (n >= 0) {
    size_t len = (size_t)n > STG_LOG_MAX_LINE ? STG_LOG_MAX_LINE : (size_t)n;
    for (size_t i = 0; i < len; i++)
      if (buf[i] == '\n')
        buf[i] = ' ';
    emit(src, (int)getpid(), STG_LOGSTREAM_SYS, false, buf, len);
  }
  free(buf);
}

/* --- subscribers ------------------------------------------------------------- */

static int cmp_rec_us(const void *a, const void *b) {
  const rec_t *x = *(rec_t *const *)a, *y = *(rec_t *const *)b;
  return x->us < y->us ? -1 : x->us > y->us;
}

int stg_logstore_subscribe(stg_logstore_t *s, const stg_logsub_options_t *o,
                           stg_logsub_t **out) {
  assert(!s->closed);
  *out = NULL;
  if (o->deliver == NULL || (o->n_components > 0 && o->components == NULL))
    return UV_EINVAL;
  int rc = 0;
  rec_t **tail = NULL;
  size_t n = 0, cap = 0;
  stg_logsub_t *sub = calloc(1, sizeof *sub);
  if (sub == NULL)
    return UV_ENOMEM;
  sub->store = s;
  sub->follow = o->follow;
  sub->deliver = o->deliver;
  sub->arg = o->arg;
  if (o->n_components > 0) {
    sub->names = calloc(o->n_components, sizeof *sub->names);
    if (sub->names == NULL) {
      rc = UV_ENOMEM;
      goto out;
    }
    for (size_t i = 0; i < o->n_components; i++) {
      sub->names[i] = strdup(o->components[i]);
      if (sub->names[i] == NULL) {
        rc = UV_ENOMEM;
        goto out;
      }
      sub->n_names++;
    }
  }
  /* The tail: the last o->tail records of each component, by time. */
  for (stg_logsrc_t *src = s->sources; src && o->tail > 0; src = src->next)
    if (sub_wants(sub, src))
      cap += src->rcount < o->tail ? src->rcount : (size_t)o->tail;
  if (cap > 0) {
    tail = malloc(cap * sizeof *tail);
    if (tail == NULL) {
      rc = UV_ENOMEM;
      goto out;
    }
    for (stg_logsrc_t *src = s->sources; src; src = src->next) {
      if (!sub_wants(sub, src))
        continue;
      size_t skip = src->rcount > o->tail ? src->rcount - (size_t)o->tail : 0;
      size_t k = 0;
      for (rec_t *r = src->rhead; r; r = r->rnext, k++) {
        if (k < skip)
          continue;
        rec_ref(r); /* a delivery may make records that evict these */
        tail[n++] = r;
      }
    }
    qsort(tail, n, sizeof *tail, cmp_rec_us);
  }
  s->depth++;
  for (size_t i = 0; i < n && !sub->cancelled; i++) {
    gbuf_t json = {0};
    json_rec(&json, tail[i]);
    if (deliver_rec(sub, tail[i], &json) == UV_ENOBUFS)
      add_gap(sub, tail[i]);
    free(json.p);
  }
  if (!sub->follow && !sub->cancelled) {
    flush_gaps(sub, true);
    if (!sub->cancelled)
      sub->deliver(sub->arg, "{\"end\":true}\n", 13, true);
  }
  s->depth--;
  if (sub->cancelled) {
    rc = UV_ECANCELED;
    goto out;
  }
  sub->next = s->subs;
  if (s->subs)
    s->subs->prev = sub;
  s->subs = sub;
  sub->linked = true;
  *out = sub;
  sub = NULL;
  sweep(s);
out:
  for (size_t i = 0; i < n; i++)
    rec_unref(tail[i]);
  free(tail);
  if (sub)
    sub_free(sub);
  return rc;
}

int stg_logsub_resume(stg_logsub_t *sub) {
  stg_logstore_t *s = sub->store;
  if (sub->cancelled || !sub->behind)
    return 0;
  gbuf_t json = {0};
  size_t sent = 0;
  s->depth++;
  while (!sub->cancelled) {
    rec_t *r = sub->cursor;
    if (r == NULL) {
      /* Caught up; records lost at the end are still to be told. */
      if (sub->n_gaps == 0 || flush_gaps(sub, false))
        sub->behind = false;
      break;
    }
    if (!sub_wants(sub, r->src)) {
      sub->cursor = r->gnext;
      continue;
    }
    if (sent >= CATCHUP_STEP)
      break;
    json.len = 0;
    json.failed = false;
    json_rec(&json, r);
    if (deliver_rec(sub, r, &json) == UV_ENOBUFS)
      break;
    sub->cursor = r->gnext;
    sent += json.len;
  }
  free(json.p);
  s->depth--;
  int more = !sub->cancelled && sub->behind;
  sweep(s);
  return more;
}

void stg_logsub_cancel(stg_logsub_t *sub) {
  if (sub == NULL || sub->cancelled)
    return;
  stg_logstore_t *s = sub->store;
  sub->cancelled = true;
  if (!sub->linked)
    return; /* in its own subscribe call, which frees it */
  s->need_sweep = true;
  sweep(s);
}

/* --- the writer thread --------------------------------------------------------- */

static void report(stg_logstore_t *s, stg_logsrc_t *src, int err) {
  uv_mutex_lock(&s->mu);
  s->err = err;
  snprintf(s->err_path, sizeof s->err_path, "%s", src->path);
  uv_mutex_unlock(&s->mu);
  uv_async_send(&s->async);
}

static int w_open(stg_logstore_t *s, stg_logsrc_t *src) {
  if (!src->wseen) {
    src->wseen = true;
    src->wnext = s->wsources;
    s->wsources = src;
  }
  int fd = open(src->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = -errno;
    close(fd);
    return e;
  }
  src->fd = fd;
  src->fsize = (uint64_t)st.st_size;
  return 0;
}

static void w_close(stg_logsrc_t *src) {
  if (src->fd >= 0)
    close(src->fd);
  src->fd = -1;
}

/* Renames <c>.log to .1 (and .1 to .2, ..., dropping .keep), or deletes it
 * with keep 0, and starts a new file. */
static int w_rotate(stg_logstore_t *s, stg_logsrc_t *src, unsigned keep) {
  char from[4200], to[4200];
  int rc = 0;
  w_close(src);
  if (keep == 0) {
    if (unlink(src->path) != 0 && errno != ENOENT)
      rc = -errno;
  } else {
    for (unsigned i = keep - 1; i >= 1; i--) {
      snprintf(from, sizeof from, "%s.%u", src->path, i);
      snprintf(to, sizeof to, "%s.%u", src->path, i + 1);
      if (rename(from, to) != 0 && errno != ENOENT && rc == 0)
        rc = -errno;
    }
    snprintf(to, sizeof to, "%s.1", src->path);
    if (rename(src->path, to) != 0 && errno != ENOENT && rc == 0)
      rc = -errno;
  }
  if (rc != 0)
    report(s, src, rc);
  return w_open(s, src);
}

/* Writes the buffered lines. If that fails they are dropped and counted,
 * and a partly written line is taken back. */
static void w_flush(stg_logstore_t *s) {
  stg_logsrc_t *src = s->wsrc;
  s->wsrc = NULL;
  if (src == NULL || s->wlen == 0)
    return;
  int rc = src->fd < 0 ? w_open(s, src) : 0;
  size_t done = 0;
  while (rc == 0 && done < s->wlen) {
    ssize_t w = write(src->fd, s->wbuf + done, s->wlen - done);
    if (w >= 0) {
      done += (size_t)w;
    } else if (errno != EINTR) {
      rc = -errno;
      /* Take back a part of a line, so the next one starts a line. */
      if (done > 0 && ftruncate(src->fd, (off_t)src->fsize) != 0)
        w_close(src); /* reopened (and fstat'ed) for the next record */
    }
  }
  if (rc == 0) {
    uv_mutex_lock(&s->mu);
    s->progress_ms = uv_hrtime() / 1000000u;
    uv_mutex_unlock(&s->mu);
    src->fsize += s->wlen;
    src->disk_dropped -= s->wnoted;
    src->failing = false;
  } else {
    src->disk_dropped += s->wrecs;
    s->wdropped += s->wrecs;
    if (!src->failing)
      report(s, src, rc);
    src->failing = true;
  }
  s->wlen = 0;
  s->wrecs = s->wnoted = 0;
}

/* Buffers one line "TS PID STREAM TEXT\n", rotating first if needed. */
/* "TS PID STREAM " into hdr (STG_LOG_TS_LEN + 32 bytes), exactly as
 * stg_log_format_ts and "%d %s " would write it; the date and time of day
 * are formatted once a second (this runs for every line of a flood).
 * Returns the length. */
static size_t w_header(stg_logstore_t *s, uint64_t us, int pid, const char *stream,
                       char *hdr) {
  uint64_t sec = us / 1000000u;
  if (sec != s->ts_sec || s->ts_prefix[0] == '\0') {
    char ts[STG_LOG_TS_LEN];
    stg_log_format_ts(sec * 1000000u, ts);
    memcpy(s->ts_prefix, ts, 19);
    s->ts_sec = sec;
  }
  char *p = hdr;
  memcpy(p, s->ts_prefix, 19);
  p += 19;
  *p++ = '.';
  unsigned frac = (unsigned)(us % 1000000u);
  for (int i = 5; i >= 0; i--) {
    p[i] = (char)('0' + frac % 10);
    frac /= 10;
  }
  p += 6;
  *p++ = 'Z';
  *p++ = ' ';
  char digits[16];
  int nd = 0;
  unsigned v = pid < 0 ? 0u : (unsigned)pid;
  do {
    digits[nd++] = (char)('0' + v % 10);
    v /= 10;
  } while (v && nd < (int)sizeof digits);
  while (nd > 0)
    *p++ = digits[--nd];
  *p++ = ' ';
  size_t sl = strlen(stream);
  memcpy(p, stream, sl);
  p += sl;
  *p++ = ' ';
  return (size_t)(p - hdr);
}

static int w_line(stg_logstore_t *s, stg_logsrc_t *src, uint64_t us, int pid,
                  const char *stream, const char *text, size_t len,
                  uint64_t max_size, unsigned keep) {
  char hdr[STG_LOG_TS_LEN + 32];
  int hl = (int)w_header(s, us, pid, stream, hdr);
  size_t total = (size_t)hl + len + 1;
  int rc;
  if (s->wsrc != src)
    w_flush(s);
  if (src->fd < 0 && (rc = w_open(s, src)) != 0)
    return rc;
  uint64_t size = src->fsize + s->wlen;
  if (max_size > 0 && size > 0 && size + total > max_size) {
    w_flush(s);
    if ((rc = w_rotate(s, src, keep)) != 0)
      return rc;
  }
  if (s->wlen + total > WBUF_CAP)
    w_flush(s);
  s->wsrc = src;
  memcpy(s->wbuf + s->wlen, hdr, (size_t)hl);
  memcpy(s->wbuf + s->wlen + (size_t)hl, text, len);
  s->wbuf[s->wlen + total - 1] = '\n';
  s->wlen += total;
  return 0;
}

/* Buffers one record (after a "dropped N lines" note if the disk failed
 * before); one that cannot be is dropped and counted. */
static void w_record(stg_logstore_t *s, rec_t *r, uint64_t max_size, unsigned keep) {
  stg_logsrc_t *src = r->src;
  int rc = 0;
  if (s->wsrc != src)
    w_flush(s);
  if (src->disk_dropped > 0 && s->wnoted == 0) {
    char note[64];
    int n = snprintf(note, sizeof note, "dropped %llu lines",
                     (unsigned long long)src->disk_dropped);
    uint64_t count = src->disk_dropped;
    rc = w_line(s, src, r->us, (int)getpid(), "sys", note, (size_t)n, max_size, keep);
    if (rc == 0)
      s->wnoted = count;
  }
  if (rc == 0)
    rc = w_line(s, src, r->us, r->pid, stg_log_stream_name(r->stream, r->cont), r->text,
                r->len, max_size, keep);
  if (rc == 0) {
    s->wrecs++;
    return;
  }
  src->disk_dropped++;
  s->wdropped++;
  if (!src->failing)
    report(s, src, rc);
  src->failing = true;
}

static void writer(void *arg) {
  stg_logstore_t *s = arg;
  for (;;) {
    uv_mutex_lock(&s->mu);
    while (s->qhead == NULL && !s->closing && !s->reopen)
      uv_cond_wait(&s->cond, &s->mu);
    rec_t *batch = s->qhead;
    s->in_batch = batch != NULL;
    s->progress_ms = uv_hrtime() / 1000000u;
    s->qhead = s->qtail = NULL;
    uint64_t max_size = s->max_size;
    unsigned keep = s->keep;
    bool reopen = s->reopen;
    s->reopen = false;
    uv_mutex_unlock(&s->mu);

    if (reopen)
      for (stg_logsrc_t *src = s->wsources; src; src = src->wnext)
        w_close(src);
    size_t bytes = 0;
    while (batch) {
      rec_t *r = batch;
      batch = r->qnext;
      if (s->wbuf == NULL)
        s->wbuf = malloc(WBUF_CAP);
      if (s->wbuf != NULL) {
        w_record(s, r, max_size, keep);
      } else {
        r->src->disk_dropped++; /* out of memory: as good as a failed write */
        s->wdropped++;
      }
      bytes += rec_qsize(r);
      rec_unref(r);
    }
    w_flush(s);
    uint64_t dropped = s->wdropped;
    s->wdropped = 0;

    bool notify = false, quit = false;
    uv_mutex_lock(&s->mu);
    s->qbytes -= bytes;
    s->disk_dropped += dropped;
    s->in_batch = false;
    if (s->want_room && s->qbytes <= s->queue_cap / 2) {
      s->want_room = false;
      notify = true;
    }
    quit = s->closing && s->qhead == NULL;
    uv_mutex_unlock(&s->mu);
    if (notify)
      uv_async_send(&s->async);
    if (quit)
      break;
  }
  for (stg_logsrc_t *src = s->wsources; src; src = src->wnext)
    w_close(src);
  free(s->wbuf);
  s->wbuf = NULL;
  uv_mutex_lock(&s->mu);
  s->thread_done = true;
  uv_mutex_unlock(&s->mu);
  uv_async_send(&s->async);
}

/* --- the store ----------------------------------------------------------------- */

static void store_free(stg_logstore_t *s) {
  for (stg_logsrc_t *src = s->sources, *next; src; src = next) {
    next = src->next;
    for (rec_t *r = src->rhead, *rn; r; r = rn) {
      rn = r->rnext;
      rec_unref(r);
    }
    free(src->part[0].buf);
    free(src->part[1].buf);
    free(src);
  }
  uv_mutex_destroy(&s->mu);
  uv_cond_destroy(&s->cond);
  free(s->dir);
  free(s);
}

static void on_close(uv_handle_t *h) {
  stg_logstore_t *s = container_of((uv_async_t *)h, stg_logstore_t, async);
  void (*done)(void *) = s->done;
  void *arg = s->done_arg;
  store_free(s);
  if (done)
    done(arg);
}

static void on_async(uv_async_t *a) {
  stg_logstore_t *s = container_of(a, stg_logstore_t, async);
  uv_mutex_lock(&s->mu);
  int err = s->err;
  char path[sizeof s->err_path];
  if (err)
    memcpy(path, s->err_path, sizeof path);
  s->err = 0;
  bool done = s->thread_done;
  uv_mutex_unlock(&s->mu);
  if (err)
    stg_warn("logs: write %s: %s; lines are dropped (and counted) until it works",
             path, uv_strerror(err));
  if (done) {
    uv_thread_join(&s->thread);
    uv_close((uv_handle_t *)&s->async, on_close);
    return;
  }
  if (!s->closed) {
    for (stg_logsrc_t *src = s->sources; src; src = src->next)
      note_drops(src, false);
    if (s->room)
      s->room(s->room_arg);
  }
}

/* --- pacing ------------------------------------------------------------------- */

bool stg_logstore_busy(stg_logstore_t *s) {
  uint64_t now = uv_hrtime() / 1000000u;
  uv_mutex_lock(&s->mu);
  bool busy = s->qbytes >= s->queue_cap / 2 &&
              !(s->in_batch && now - s->progress_ms >= STG_LOGSTORE_STALL_MS);
  if (busy)
    s->want_room = true;
  uv_mutex_unlock(&s->mu);
  return busy;
}

bool stg_logstore_stalled(stg_logstore_t *s) {
  uint64_t now = uv_hrtime() / 1000000u;
  uv_mutex_lock(&s->mu);
  bool stalled = s->in_batch && now - s->progress_ms >= STG_LOGSTORE_STALL_MS;
  uv_mutex_unlock(&s->mu);
  return stalled;
}

void stg_logstore_on_room(stg_logstore_t *s, void (*room)(void *arg), void *arg) {
  s->room = room;
  s->room_arg = arg;
}

int stg_logstore_init(uv_loop_t *loop, const stg_logstore_options_t *o,
                      stg_logstore_t **out) {
  *out = NULL;
  if (o == NULL || o->dir == NULL)
    return UV_EINVAL;
  if (mkdir(o->dir, 0700) != 0 && errno != EEXIST)
    return -errno;
  stg_logstore_t *s = calloc(1, sizeof *s);
  if (s == NULL)
    return UV_ENOMEM;
  int rc = 0;
  s->dir = strdup(o->dir);
  if (s->dir == NULL) {
    free(s);
    return UV_ENOMEM;
  }
  s->loop = loop;
  s->max_size = o->max_size;
  s->keep = o->keep;
  s->queue_cap = o->queue_cap ? o->queue_cap : DEFAULT_QUEUE_CAP;
  s->ring_cap = o->ring_cap ? o->ring_cap : DEFAULT_RING_CAP;
  if ((rc = uv_mutex_init(&s->mu)) != 0) {
    free(s->dir);
    free(s);
    return rc;
  }
  if ((rc = uv_cond_init(&s->cond)) != 0) {
    uv_mutex_destroy(&s->mu);
    free(s->dir);
    free(s);
    return rc;
  }
  if ((rc = uv_async_init(loop, &s->async, on_async)) != 0) {
    store_free(s);
    return rc;
  }
  if ((rc = uv_thread_create(&s->thread, writer, s)) != 0) {
    /* Nothing else started: close the handle, free in its callback. */
    s->done = NULL;
    uv_close((uv_handle_t *)&s->async, on_close);
    return rc;
  }
  *out = s;
  return 0;
}

void stg_logstore_close(stg_logstore_t *s, void (*done)(void *arg), void *arg) {
  assert(!s->closed && s->depth == 0);
  for (stg_logsrc_t *src = s->sources; src; src = src->next) {
    flush_partial(src, STG_LOGSTREAM_OUT, true);
    flush_partial(src, STG_LOGSTREAM_ERR, true);
  }
  s->closed = true; /* from here on the queue takes every record */
  for (stg_logsrc_t *src = s->sources; src; src = src->next)
    note_drops(src, true);
  for (stg_logsub_t *sub = s->subs, *next; sub; sub = next) {
    next = sub->next;
    sub_free(sub);
  }
  s->subs = NULL;
  s->done = done;
  s->done_arg = arg;
  uv_mutex_lock(&s->mu);
  s->closing = true;
  uv_cond_signal(&s->cond);
  uv_mutex_unlock(&s->mu);
}

void stg_logstore_reconfigure(stg_logstore_t *s, uint64_t max_size, unsigned keep) {
  uv_mutex_lock(&s->mu);
  s->max_size = max_size;
  s->keep = keep;
  uv_mutex_unlock(&s->mu);
}

void stg_logstore_reopen(stg_logstore_t *s) {
  uv_mutex_lock(&s->mu);
  s->reopen = true;
  uv_cond_signal(&s->cond);
  uv_mutex_unlock(&s->mu);
}

void stg_logstore_stats(stg_logstore_t *s, stg_logstore_stats_t *st) {
  st->records = s->records;
  st->queue_dropped = s->queue_dropped;
  uv_mutex_lock(&s->mu);
  st->disk_dropped = s->disk_dropped;
  uv_mutex_unlock(&s->mu);
}
