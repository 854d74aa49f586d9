/* stg_fetch: libcurl multi-socket on a uv loop (stg_curlloop), verified and
 * resumable.
 * Contract: docs/internals/fetch.md. */
#include "fetch.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/ecp.h>
#include <mbedtls/error.h>

#include "log.h"
#include "version.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

#define MS 1000000ull /* ns per ms, for uv_hrtime */

enum { STEP_NONE, STEP_SUM, STEP_SIG, STEP_FILE };

static void attempt_start(stg_fetch_t *f);
static void on_retry(uv_timer_t *t);
static void finish(stg_fetch_t *f, int status);
static void on_transfer_done(stg_curlloop_xfer_t *x, CURLcode rc);

/* --- small helpers ------------------------------------------------------------ */

static char *dupstr(const char *s) { return s ? strdup(s) : NULL; }

static char *concat(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  char *s = malloc(la + lb + 1);
  if (s != NULL) {
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
  }
  return s;
}

static bool is_hex64(const char *s, size_t len) {
  if (len != 64)
    return false;
  for (size_t i = 0; i < 64; i++)
    if (!isxdigit((unsigned char)s[i]))
      return false;
  return true;
}

static void to_hex(const unsigned char *d, size_t n, char *out) {
  static const char x[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = x[d[i] >> 4];
    out[2 * i + 1] = x[d[i] & 15];
  }
  out[2 * n] = '\0';
}

static bool has_prefix_ci(const char *s, const char *prefix) {
  return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static const char *const ca_locations[] = {
    "/etc/ssl/certs/ca-certificates.crt",                /* Debian, Ubuntu, Arch, Gentoo */
    "/etc/pki/tls/certs/ca-bundle.crt",                  /* Fedora, RHEL 6+ */
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", /* RHEL 7+, CentOS */
    "/etc/ssl/ca-bundle.pem",                            /* openSUSE */
    "/etc/pki/tls/cacert.pem",                           /* OpenELEC */
    "/etc/ssl/cert.pem",                                 /* Alpine, macOS, OpenBSD */
    "/usr/local/etc/openssl/cert.pem",                   /* Homebrew (Intel) */
    "/opt/homebrew/etc/openssl@3/cert.pem",              /* Homebrew (Apple silicon) */
    "/usr/local/share/certs/ca-root-nss.crt",            /* FreeBSD */
};

const char *stg_fetch_default_ca_file(void) {
  const char *env[] = {"SSL_CERT_FILE", "CURL_CA_BUNDLE"};
  for (size_t i = 0; i < sizeof env / sizeof env[0]; i++) {
    const char *v = getenv(env[i]);
    if (v != NULL && *v != '\0' && access(v, R_OK) == 0)
      return v;
  }
  for (size_t i = 0; i < sizeof ca_locations / sizeof ca_locations[0]; i++)
    if (access(ca_locations[i], R_OK) == 0)
      return ca_locations[i];
  return NULL;
}

const char *stg_fetch_error_name(stg_fetch_error_t kind) {
  switch (kind) {
  case STG_FETCH_E_DNS: return "dns";
  case STG_FETCH_E_CONNECT: return "connect";
  case STG_FETCH_E_TLS: return "tls";
  case STG_FETCH_E_HTTP: return "http";
  case STG_FETCH_E_NETWORK: return "network";
  case STG_FETCH_E_CHECKSUM: return "checksum";
  case STG_FETCH_E_SIGNATURE: return "signature";
  case STG_FETCH_E_TOO_BIG: return "too-big";
  case STG_FETCH_E_WRITE: return "write";
  case STG_FETCH_E_STALLED: return "stalled";
  case STG_FETCH_E_REDIRECTS: return "redirects";
  case STG_FETCH_E_INSECURE_REDIRECT: return "insecure-redirect";
  }
  return "unknown";
}

bool stg_fetch_error_retried(stg_fetch_error_t kind) {
  return kind != STG_FETCH_E_SIGNATURE && kind != STG_FETCH_E_TOO_BIG &&
         kind != STG_FETCH_E_INSECURE_REDIRECT;
}

int stg_fetch_error_status(stg_fetch_error_t kind) {
  switch (kind) {
  case STG_FETCH_E_DNS: return UV_EAI_NONAME;
  case STG_FETCH_E_CONNECT: return UV_ECONNREFUSED;
  case STG_FETCH_E_CHECKSUM: return UV_EINVAL;
  case STG_FETCH_E_SIGNATURE: return -EBADMSG;
  case STG_FETCH_E_TOO_BIG: return UV_EFBIG;
  case STG_FETCH_E_WRITE: return UV_EIO;
  case STG_FETCH_E_STALLED: return UV_ETIMEDOUT;
  default: return UV_EPROTO;
  }
}

static void set_err(stg_fetch_t *f, stg_fetch_error_t kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(stg_fetch_t *f, stg_fetch_error_t kind, const char *fmt, ...) {
  if (f->err != 0)
    return; /* the first cause wins */
  f->err = kind;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->err_reason, sizeof f->err_reason, fmt, ap);
  va_end(ap);
}

static const char *step_url(stg_fetch_t *f) {
  return f->step == STEP_SUM ? f->sum_url : f->step == STEP_SIG ? f->sig_url : f->url;
}

static void remove_partial(stg_fetch_t *f) {
  if (f->fd >= 0) {
    close(f->fd);
    f->fd = -1;
  }
  unlink(f->partial);
  unlink(f->validator);
}

/* --- the validator sidecar: what If-Range sends on a resume ------------------ */

/* Format: "url <url>\n" then "etag <value>\n" or "last-modified <value>\n". */
static void validator_save(stg_fetch_t *f) {
  const char *kind = NULL, *val = NULL;
  if (f->etag[0] != '\0' && strncmp(f->etag, "W/", 2) != 0) { /* If-Range needs a strong one */
    kind = "etag";
    val = f->etag;
  } else if (f->last_modified[0] != '\0') {
    kind = "last-modified";
    val = f->last_modified;
  }
  if (kind == NULL) {
    unlink(f->validator);
    return;
  }
  FILE *fp = fopen(f->validator, "we");
  if (fp == NULL)
    return; /* only resuming is lost */
  fprintf(fp, "url %s\n%s %s\n", f->url, kind, val);
  if (fclose(fp) != 0)
    unlink(f->validator);
}

/* Reads the validator for f->url into out ("" if none). */
static void validator_load(stg_fetch_t *f, char *out, size_t outlen) {
  out[0] = '\0';
  FILE *fp = fopen(f->validator, "re");
  if (fp == NULL)
    return;
  char line[1024];
  bool same_url = false;
  while (fgets(line, sizeof line, fp) != NULL) {
    line[strcspn(line, "\r\n")] = '\0';
    if (strncmp(line, "url ", 4) == 0)
      same_url = strcmp(line + 4, f->url) == 0;
    else if (same_url && strncmp(line, "etag ", 5) == 0)
      snprintf(out, outlen, "%s", line + 5);
    else if (same_url && strncmp(line, "last-modified ", 14) == 0)
      snprintf(out, outlen, "%s", line + 14);
  }
  fclose(fp);
}

/* --- curl callbacks for one transfer -------------------------------------------- */

static void copy_header_value(const char *p, size_t len, char *out, size_t outlen) {
  while (len > 0 && (*p == ' ' || *p == '\t')) {
    p++;
    len--;
  }
  while (len > 0 && (p[len - 1] == '\r' || p[len - 1] == '\n' || p[len - 1] == ' '))
    len--;
  if (len >= outlen)
    len = outlen - 1;
  memcpy(out, p, len);
  out[len] = '\0';
}

/* The final response's headers are in: decide what the body is. */
static int body_begin(stg_fetch_t *f) {
  curl_off_t cl = -1;
  curl_easy_getinfo(f->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
  if (f->status == 206) {
    unsigned long long a, b, t;
    if (!f->resuming || sscanf(f->content_range, "bytes %llu-%llu/%llu", &a, &b, &t) != 3 ||
        a != f->offset) {
      set_err(f, STG_FETCH_E_NETWORK, "unexpected Content-Range \"%s\" for a resume at %llu",
              f->content_range, (unsigned long long)f->offset);
      unlink(f->validator); /* the next attempt starts over */
      return -1;
    }
    f->total = t;
  } else {
    if (f->resuming) {
      /* 200 to a Range request: the file changed or the server ignores
       * ranges. Start over with this response. */
      if (ftruncate(f->fd, 0) < 0 || lseek(f->fd, 0, SEEK_SET) < 0) {
        set_err(f, STG_FETCH_E_WRITE, "truncate %s: %s", f->partial, strerror(errno));
        return -1;
      }
      stg_sha256_start(&f->sha);
      f->offset = 0;
      f->resuming = false;
    }
    f->total = cl >= 0 ? (uint64_t)cl : 0;
  }
  if (f->total > f->o.max_size) {
    set_err(f, STG_FETCH_E_TOO_BIG, "size %llu is over the cap of %llu bytes",
            (unsigned long long)f->total, (unsigned long long)f->o.max_size);
    return -1;
  }
  validator_save(f);
  f->body_started = true;
  return 0;
}

static size_t on_header(char *buf, size_t size, size_t n, void *ud) {
  stg_fetch_t *f = ud;
  size_t len = size * n;
  if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
    /* A new response (the first, or after a redirect). */
    const char *sp = memchr(buf, ' ', len);
    f->status = sp != NULL ? strtol(sp + 1, NULL, 10) : 0;
    f->body_started = false;
    f->etag[0] = f->last_modified[0] = f->content_range[0] = '\0';
  } else if (len > 5 && strncasecmp(buf, "etag:", 5) == 0) {
    copy_header_value(buf + 5, len - 5, f->etag, sizeof f->etag);
  } else if (len > 14 && strncasecmp(buf, "last-modified:", 14) == 0) {
    copy_header_value(buf + 14, len - 14, f->last_modified, sizeof f->last_modified);
  } else if (len > 14 && strncasecmp(buf, "content-range:", 14) == 0) {
    copy_header_value(buf + 14, len - 14, f->content_range, sizeof f->content_range);
  } else if (len > 9 && strncasecmp(buf, "location:", 9) == 0) {
    char loc[16];
    copy_header_value(buf + 9, len - 9, loc, sizeof loc);
    if (has_prefix_ci(loc, "http://") && (f->status / 100) == 3)
      f->http_location = true;
  } else if ((len == 2 && buf[0] == '\r') || (len == 1 && buf[0] == '\n')) {
    if (f->step == STEP_FILE && (f->status == 200 || f->status == 206) && !f->body_started &&
        body_begin(f) < 0)
      return 0; /* aborts the transfer: CURLE_WRITE_ERROR, reason in f->err */
  }
  return len;
}

static size_t on_write_file(char *buf, size_t size, size_t n, void *ud) {
  stg_fetch_t *f = ud;
  size_t len = size * n;
  if (!f->body_started) {
    /* An error page: not worth downloading. */
    set_err(f, STG_FETCH_E_HTTP, "HTTP status %ld", f->status);
    return 0;
  }
  if (f->offset + f->received + len > f->o.max_size) {
    set_err(f, STG_FETCH_E_TOO_BIG, "body is over the cap of %llu bytes",
            (unsigned long long)f->o.max_size);
    return 0;
  }
  for (size_t off = 0; off < len;) {
    ssize_t w = write(f->fd, buf + off, len - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      int e = w < 0 ? errno : EIO;
      f->write_errno = e;
      set_err(f, STG_FETCH_E_WRITE, "write %s: %s", f->partial, strerror(e));
      return 0;
    }
    off += (size_t)w;
  }
  stg_sha256_update(&f->sha, (const unsigned char *)buf, len);
  f->received += len;
  return len;
}

static size_t on_write_small(char *buf, size_t size, size_t n, void *ud) {
  stg_fetch_t *f = ud;
  size_t len = size * n;
  unsigned char *dst = f->step == STEP_SUM ? f->sum : f->sig;
  size_t cap = f->step == STEP_SUM ? sizeof f->sum : sizeof f->sig;
  if (f->status != 200) {
    set_err(f, STG_FETCH_E_HTTP, "HTTP status %ld", f->status);
    return 0;
  }
  if (f->small_len + len > cap) {
    set_err(f, f->step == STEP_SUM ? STG_FETCH_E_CHECKSUM : STG_FETCH_E_SIGNATURE,
            "%s is over %zu bytes", f->step == STEP_SUM ? "checksum file" : "signature", cap);
    return 0;
  }
  memcpy(dst + f->small_len, buf, len);
  f->small_len += len;
  return len;
}

static int on_xferinfo(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
  stg_fetch_t *f = ud;
  if (f->cancelled)
    return 1; /* CURLE_ABORTED_BY_CALLBACK */
  if (f->o.progress == NULL || !f->body_started)
    return 0;
  uint64_t now = uv_hrtime();
  uint64_t done = f->offset + f->received;
  if (f->progress_at != 0) {
    if (now - f->progress_at < 100 * MS)
      return 0;
    double dt = (double)(now - f->progress_at) / 1e9;
    double inst = (double)(done - f->rate_bytes) / dt;
    f->rate = f->rate == 0 ? inst : 0.7 * f->rate + 0.3 * inst;
  }
  f->progress_at = now;
  f->rate_bytes = done;
  f->o.progress(f, done, f->total, f->rate);
  return 0;
}

/* --- one attempt: .sha256, .sig, then the file ------------------------------------- */

static int transfer_start(stg_fetch_t *f, int step, char *range, const char *if_range) {
  f->step = step;
  f->status = 0;
  f->err = 0;
  f->err_reason[0] = f->curl_err[0] = '\0';
  f->http_location = false;
  f->body_started = false;
  f->small_len = 0;
  f->received = 0;
  CURL *e = curl_easy_init();
  if (e == NULL)
    return UV_ENOMEM;
  const char *protos = f->o.allow_http ? "http,https" : "https";
  char ua[64];
  snprintf(ua, sizeof ua, "stigmer/%s", stg_version());
  curl_easy_setopt(e, CURLOPT_URL, step_url(f));
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, ua);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, protos);
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, protos);
  curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L); /* a proxy's 200 is not ours */
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
  if (f->ca_file != NULL)
    curl_easy_setopt(e, CURLOPT_CAINFO, f->ca_file);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)f->o.connect_timeout_ms);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, (long)f->o.low_speed_limit);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)((f->o.low_speed_time_ms + 999) / 1000));
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, f->curl_err);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, f);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, step == STEP_FILE ? on_write_file : on_write_small);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
  curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
  curl_easy_setopt(e, CURLOPT_XFERINFODATA, f);
  curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
  if (range != NULL)
    curl_easy_setopt(e, CURLOPT_RANGE, range); /* not RESUME_FROM: we handle a 200 */
  curl_slist_free_all(f->headers);
  f->headers = NULL;
  if (if_range != NULL) {
    char h[1100];
    snprintf(h, sizeof h, "If-Range: %s", if_range);
    f->headers = curl_slist_append(NULL, h);
    if (f->headers == NULL) {
      curl_easy_cleanup(e);
      return UV_ENOMEM;
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, f->headers);
  }
  /* CURLOPT_PRIVATE and the close-socket callback belong to stg_curlloop. */
  int rc = stg_curlloop_add(&f->cl, &f->xfer, e, on_transfer_done);
  if (rc < 0) {
    curl_easy_cleanup(e);
    return rc;
  }
  f->easy = e;
  return 0;
}

static void attempt_failed(stg_fetch_t *f, stg_fetch_error_t kind, const char *reason) {
  if (kind == STG_FETCH_E_CHECKSUM || kind == STG_FETCH_E_SIGNATURE || kind == STG_FETCH_E_TOO_BIG)
    remove_partial(f); /* never resume from bytes known to be wrong */
  if (f->fd >= 0) {
    close(f->fd); /* the .partial and its validator stay for a resume */
    f->fd = -1;
  }
  f->attempts++;
  bool retry = stg_fetch_error_retried(kind) &&
               (f->o.max_attempts == 0 || f->attempts < f->o.max_attempts);
  uint64_t delay = f->o.retry_initial_ms;
  for (unsigned i = 1; i < f->attempts && delay < f->o.retry_max_ms; i++)
    delay *= 2;
  if (delay > f->o.retry_max_ms)
    delay = f->o.retry_max_ms;
  if (f->o.failure != NULL)
    f->o.failure(f, kind, reason, retry, retry ? delay : 0);
  else if (retry)
    stg_warn("%s; retrying in %llu ms", reason, (unsigned long long)delay);
  else
    stg_error("%s", reason);
  if (f->cancelled)
    return; /* cancelled from the callback: the retry timer finishes */
  if (retry) {
    uv_timer_start(&f->retry_timer, on_retry, delay, 0);
    return;
  }
  int status = stg_fetch_error_status(kind);
  if (kind == STG_FETCH_E_WRITE && f->write_errno != 0)
    status = -f->write_errno;
  finish(f, status);
}

/* Opens the .partial; resumes it when a validator for this URL exists. */
static void file_start(stg_fetch_t *f) {
  char reason[600], if_range[1024], range[32];
  stg_sha256_start(&f->sha);
  f->offset = 0;
  f->total = 0;
  f->resuming = false;
  f->progress_at = 0;
  f->rate = 0;
  if (f->fd < 0)
    f->fd = open(f->partial, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (f->fd < 0) {
    f->write_errno = errno;
    snprintf(reason, sizeof reason, "open %s: %s", f->partial, strerror(errno));
    attempt_failed(f, STG_FETCH_E_WRITE, reason);
    return;
  }
  struct stat st;
  validator_load(f, if_range, sizeof if_range);
  if (if_range[0] != '\0' && fstat(f->fd, &st) == 0 && st.st_size > 0 &&
      (uint64_t)st.st_size < f->o.max_size) {
    /* Resume: the digest must cover the bytes already on disk. */
    unsigned char buf[16384];
    uint64_t left = (uint64_t)st.st_size;
    lseek(f->fd, 0, SEEK_SET);
    while (left > 0) {
      ssize_t r = read(f->fd, buf, left < sizeof buf ? left : sizeof buf);
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        break;
      stg_sha256_update(&f->sha, buf, (size_t)r);
      left -= (uint64_t)r;
    }
    if (left == 0) {
      f->offset = (uint64_t)st.st_size;
      f->resuming = true;
    } else {
      stg_sha256_start(&f->sha);
    }
  }
  if (!f->resuming) {
    unlink(f->validator);
    if (ftruncate(f->fd, 0) < 0) {
      f->write_errno = errno;
      snprintf(reason, sizeof reason, "truncate %s: %s", f->partial, strerror(errno));
      attempt_failed(f, STG_FETCH_E_WRITE, reason);
      return;
    }
  }
  lseek(f->fd, (off_t)f->offset, SEEK_SET);
  snprintf(range, sizeof range, "%llu-", (unsigned long long)f->offset);
  int rc = transfer_start(f, STEP_FILE, f->resuming ? range : NULL,
                          f->resuming ? if_range : NULL);
  if (rc < 0) {
    snprintf(reason, sizeof reason, "start transfer of %s: %s", f->url, uv_strerror(rc));
    attempt_failed(f, STG_FETCH_E_NETWORK, reason);
  }
}

static void step_start(stg_fetch_t *f, int step) {
  if (step == STEP_FILE) {
    file_start(f);
    return;
  }
  int rc = transfer_start(f, step, NULL, NULL);
  if (rc < 0) {
    char reason[600];
    snprintf(reason, sizeof reason, "start transfer of %s: %s", step_url(f), uv_strerror(rc));
    attempt_failed(f, STG_FETCH_E_NETWORK, reason);
  }
}

static void attempt_start(stg_fetch_t *f) {
  if (f->cancelled) {
    finish(f, UV_ECANCELED);
    return;
  }
  f->restarted = false;
  if (!f->fixed_digest)
    step_start(f, STEP_SUM);
  else if (f->have_key)
    step_start(f, STEP_SIG);
  else
    step_start(f, STEP_FILE);
}

static void on_retry(uv_timer_t *t) {
  attempt_start(container_of(t, stg_fetch_t, retry_timer));
}

/* Maps a finished transfer to a failure class and a reason. */
static stg_fetch_error_t classify(stg_fetch_t *f, CURLcode rc, char *reason, size_t rlen) {
  const char *what = f->step == STEP_SUM ? "checksum " : f->step == STEP_SIG ? "signature " : "";
  size_t el = strlen(f->curl_err);
  while (el > 0 && isspace((unsigned char)f->curl_err[el - 1]))
    f->curl_err[--el] = '\0';
  const char *detail = f->curl_err[0] ? f->curl_err : curl_easy_strerror(rc);
  stg_fetch_error_t kind;
  if (f->err != 0) {
    snprintf(reason, rlen, "fetch %s%s: %s", what, step_url(f), f->err_reason);
    return f->err;
  }
  if (rc == CURLE_OK) {
    snprintf(reason, rlen, "fetch %s%s: HTTP status %ld", what, step_url(f), f->status);
    return STG_FETCH_E_HTTP;
  }
  switch (rc) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    kind = STG_FETCH_E_DNS;
    break;
  case CURLE_COULDNT_CONNECT:
    kind = STG_FETCH_E_CONNECT;
    break;
  case CURLE_OPERATION_TIMEDOUT:
    /* No overall timeout is set: it is either the low-speed limit
     * ("Operation too slow") or the connect timeout (TCP and TLS). */
    kind = strstr(f->curl_err, "too slow") != NULL ? STG_FETCH_E_STALLED : STG_FETCH_E_CONNECT;
    break;
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_CRL_BADFILE:
    kind = STG_FETCH_E_TLS;
    break;
  case CURLE_TOO_MANY_REDIRECTS:
    kind = STG_FETCH_E_REDIRECTS;
    break;
  case CURLE_UNSUPPORTED_PROTOCOL:
    kind = f->http_location ? STG_FETCH_E_INSECURE_REDIRECT : STG_FETCH_E_NETWORK;
    if (f->http_location)
      detail = "redirect from https to http refused";
    break;
  case CURLE_FILESIZE_EXCEEDED:
    kind = STG_FETCH_E_TOO_BIG;
    break;
  case CURLE_WRITE_ERROR:
    kind = STG_FETCH_E_WRITE;
    break;
  default:
    /* A proxy that refuses the tunnel shows up as a receive error. */
    kind = strstr(f->curl_err, "CONNECT tunnel") != NULL || strstr(f->curl_err, "proxy") != NULL
               ? STG_FETCH_E_CONNECT
               : STG_FETCH_E_NETWORK;
    break;
  }
  static const char *const label[] = {
      [STG_FETCH_E_DNS] = "DNS",          [STG_FETCH_E_CONNECT] = "connect",
      [STG_FETCH_E_TLS] = "TLS",          [STG_FETCH_E_NETWORK] = "connection",
      [STG_FETCH_E_TOO_BIG] = "size over cap", [STG_FETCH_E_WRITE] = "write",
      [STG_FETCH_E_STALLED] = "stalled",  [STG_FETCH_E_REDIRECTS] = "too many redirects",
      [STG_FETCH_E_INSECURE_REDIRECT] = "insecure redirect",
  };
  snprintf(reason, rlen, "fetch %s%s: %s: %s", what, step_url(f), label[kind], detail);
  return kind;
}

static void file_complete(stg_fetch_t *f) {
  char reason[700], hex[65];
  unsigned char digest[32];
  uint64_t size = f->offset + f->received;
  if (f->total != 0 && size != f->total) {
    snprintf(reason, sizeof reason, "fetch %s: connection: got %llu of %llu bytes", f->url,
             (unsigned long long)size, (unsigned long long)f->total);
    attempt_failed(f, STG_FETCH_E_NETWORK, reason);
    return;
  }
  stg_sha256_finish(&f->sha, digest);
  to_hex(digest, sizeof digest, hex);
  if (strcmp(hex, f->expected) != 0) {
    snprintf(reason, sizeof reason, "fetch %s: checksum mismatch: expected %s, got %s", f->url,
             f->expected, hex);
    attempt_failed(f, STG_FETCH_E_CHECKSUM, reason);
    return;
  }
  if (f->have_key) {
    int rc = mbedtls_pk_verify(&f->key, MBEDTLS_MD_SHA256, digest, sizeof digest, f->sig,
                               f->sig_len);
    if (rc != 0) {
      char buf[128];
      mbedtls_strerror(rc, buf, sizeof buf);
      snprintf(reason, sizeof reason, "verify signature %s: %s", f->sig_url, buf);
      attempt_failed(f, STG_FETCH_E_SIGNATURE, reason);
      return;
    }
  }
  /* Verified: make it durable, then put it in place atomically. */
  const char *op = "chmod";
  if (fchmod(f->fd, f->o.mode) < 0)
    goto fail;
  op = "fsync";
  if (fsync(f->fd) < 0)
    goto fail;
  op = "close";
  int fd = f->fd;
  f->fd = -1;
  if (close(fd) < 0)
    goto fail;
  op = "rename";
  if (rename(f->partial, f->dest) < 0)
    goto fail;
  unlink(f->validator);
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", f->dest);
  char *slash = strrchr(dir, '/');
  if (slash == NULL)
    snprintf(dir, sizeof dir, ".");
  else if (slash == dir)
    dir[1] = '\0';
  else
    *slash = '\0';
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd); /* best effort: the file itself is already durable */
    close(dfd);
  }
  memcpy(f->result, hex, sizeof f->result);
  finish(f, 0);
  return;
fail:
  f->write_errno = errno;
  snprintf(reason, sizeof reason, "%s %s: %s", op, f->partial, strerror(errno));
  attempt_failed(f, STG_FETCH_E_WRITE, reason);
}

/* Parses "<hex>  <name>" or "<hex>" into f->expected. */
static int parse_sum(stg_fetch_t *f) {
  size_t i = 0, n = f->small_len;
  const char *s = (const char *)f->sum;
  while (i < n && isspace((unsigned char)s[i]))
    i++;
  size_t start = i;
  while (i < n && isxdigit((unsigned char)s[i]))
    i++;
  if (!is_hex64(s + start, i - start) || (i < n && !isspace((unsigned char)s[i])))
    return UV_EINVAL;
  for (size_t k = 0; k < 64; k++)
    f->expected[k] = (char)tolower((unsigned char)s[start + k]);
  f->expected[64] = '\0';
  return 0;
}

static void transfer_done(stg_fetch_t *f, CURLcode rc) {
  char reason[800];
  stg_fetch_error_t kind = 0;
  bool ok = rc == CURLE_OK && f->err == 0 &&
            (f->status == 200 || (f->status == 206 && f->step == STEP_FILE));
  if (!ok)
    kind = classify(f, rc, reason, sizeof reason);
  curl_easy_cleanup(f->easy); /* stg_curlloop took it out of the multi handle */
  f->easy = NULL;
  if (f->cancelled) {
    finish(f, UV_ECANCELED);
    return;
  }
  if (!ok && f->step == STEP_FILE && f->status == 416 && f->resuming && !f->restarted) {
    /* The partial is already whole (or the file shrank): start over once. */
    f->restarted = true;
    remove_partial(f);
    file_start(f);
    return;
  }
  if (!ok && f->step == STEP_SIG && kind == STG_FETCH_E_HTTP &&
      (f->status == 404 || f->status == 410)) {
    snprintf(reason, sizeof reason, "fetch signature %s: missing (HTTP status %ld)", f->sig_url,
             f->status);
    kind = STG_FETCH_E_SIGNATURE;
  }
  if (!ok) {
    attempt_failed(f, kind, reason);
    return;
  }
  switch (f->step) {
  case STEP_SUM:
    if (parse_sum(f) < 0) {
      snprintf(reason, sizeof reason, "fetch checksum %s: not a SHA-256 digest", f->sum_url);
      attempt_failed(f, STG_FETCH_E_CHECKSUM, reason);
      return;
    }
    step_start(f, f->have_key ? STEP_SIG : STEP_FILE);
    return;
  case STEP_SIG:
    f->sig_len = f->small_len;
    step_start(f, STEP_FILE);
    return;
  default:
    file_complete(f);
    return;
  }
}

static void on_transfer_done(stg_curlloop_xfer_t *x, CURLcode rc) {
  transfer_done(container_of(x, stg_fetch_t, xfer), rc);
}

/* --- start, cancel, finish --------------------------------------------------------- */

static void on_cancel(uv_timer_t *t) {
  stg_fetch_t *f = container_of(t, stg_fetch_t, retry_timer);
  finish(f, UV_ECANCELED);
}

void stg_fetch_cancel(stg_fetch_t *f) {
  if (f->cancelled || f->finishing)
    return;
  f->cancelled = true;
  uv_timer_start(&f->retry_timer, on_cancel, 0, 0);
}

static void maybe_done(stg_fetch_t *f);

static void on_retry_closed(uv_handle_t *h) {
  stg_fetch_t *f = container_of((uv_timer_t *)h, stg_fetch_t, retry_timer);
  f->open_handles--;
  maybe_done(f);
}

static void on_loop_closed(stg_curlloop_t *l) {
  stg_fetch_t *f = container_of(l, stg_fetch_t, cl);
  f->open_handles--;
  maybe_done(f);
}

static void maybe_done(stg_fetch_t *f) {
  if (!f->finishing || f->open_handles > 0)
    return;
  void (*done)(stg_fetch_t *, int, const char *) = f->o.done;
  int status = f->final_status;
  free(f->url);
  free(f->dest);
  free(f->partial);
  free(f->validator);
  free(f->ca_file);
  free(f->sum_url);
  free(f->sig_url);
  f->url = f->dest = f->partial = f->validator = f->ca_file = f->sum_url = f->sig_url = NULL;
  mbedtls_pk_free(&f->key);
  stg_sha256_free(&f->sha);
  done(f, status, status == 0 ? f->result : NULL); /* last: f may be freed */
}

static void finish(stg_fetch_t *f, int status) {
  if (f->finishing)
    return;
  f->finishing = true;
  f->final_status = status;
  if (f->easy != NULL) {
    stg_curlloop_remove(&f->xfer);
    curl_easy_cleanup(f->easy);
    f->easy = NULL;
  }
  if (f->fd >= 0) {
    close(f->fd);
    f->fd = -1;
  }
  curl_slist_free_all(f->headers);
  f->headers = NULL;
  /* Closes the pooled connections, their poll handles, and curl's timer. */
  stg_curlloop_close(&f->cl, on_loop_closed);
  uv_close((uv_handle_t *)&f->retry_timer, on_retry_closed);
}

int stg_fetch_start(uv_loop_t *loop, stg_fetch_t *f, const stg_fetch_options_t *o) {
  int rc;
  if (o == NULL || o->url == NULL || o->dest == NULL || o->done == NULL || o->dest[0] == '\0')
    return UV_EINVAL;
  if (!has_prefix_ci(o->url, "https://") && !(o->allow_http && has_prefix_ci(o->url, "http://")))
    return UV_EINVAL;
  if (o->sha256_hex != NULL && !is_hex64(o->sha256_hex, strlen(o->sha256_hex)))
    return UV_EINVAL;
  rc = stg_curlloop_global_init();
  if (rc != 0)
    return rc;

  memset(f, 0, sizeof *f);
  f->loop = loop;
  f->data = o->data;
  f->o = *o;
  f->fd = -1;
  mbedtls_pk_init(&f->key);
  stg_sha256_start(&f->sha);
  if (f->o.mode == 0)
    f->o.mode = 0644;
  f->o.mode &= 07777;
  if (f->o.max_size == 0)
    f->o.max_size = 1ull << 30;
  if (f->o.connect_timeout_ms == 0)
    f->o.connect_timeout_ms = 10000;
  if (f->o.low_speed_limit == 0)
    f->o.low_speed_limit = 1024;
  if (f->o.low_speed_time_ms == 0)
    f->o.low_speed_time_ms = 30000;
  if (f->o.retry_initial_ms == 0)
    f->o.retry_initial_ms = 1000;
  if (f->o.retry_max_ms == 0)
    f->o.retry_max_ms = 5 * 60 * 1000;

  const char *ca = o->ca_file != NULL ? o->ca_file : stg_fetch_default_ca_file();
  rc = UV_ENOENT;
  if (ca == NULL && has_prefix_ci(o->url, "https://"))
    goto out;
  if (ca != NULL && access(ca, R_OK) != 0)
    goto out;
  rc = UV_ENOMEM;
  f->url = strdup(o->url);
  f->dest = strdup(o->dest);
  f->partial = concat(o->dest, ".partial");
  f->validator = concat(o->dest, ".partial.validator");
  f->ca_file = dupstr(ca);
  f->sum_url = concat(o->url, ".sha256");
  f->sig_url = concat(o->url, ".sig");
  if (!f->url || !f->dest || !f->partial || !f->validator || (ca && !f->ca_file) ||
      !f->sum_url || !f->sig_url)
    goto out;
  f->o.url = f->url;
  f->o.dest = f->dest;
  f->o.ca_file = f->ca_file;
  f->o.sha256_hex = NULL;
  f->o.public_key = NULL;
  if (o->sha256_hex != NULL) {
    for (size_t i = 0; i < 64; i++)
      f->expected[i] = (char)tolower((unsigned char)o->sha256_hex[i]);
    f->fixed_digest = true;
  }
  if (o->public_key != NULL) {
    int prc = mbedtls_pk_parse_public_keyfile(&f->key, o->public_key);
    if (prc != 0) {
      rc = prc == MBEDTLS_ERR_PK_FILE_IO_ERROR ? UV_ENOENT : UV_EINVAL;
      goto out;
    }
    rc = UV_EINVAL;
    if (!mbedtls_pk_can_do(&f->key, MBEDTLS_PK_ECDSA) ||
        mbedtls_ecp_keypair_get_group_id(mbedtls_pk_ec(f->key)) != MBEDTLS_ECP_DP_SECP256R1)
      goto out;
    f->have_key = true;
  }

  rc = stg_curlloop_init(loop, &f->cl);
  if (rc < 0)
    goto out;
  uv_timer_init(loop, &f->retry_timer);
  f->retry_timer.data = f;
  f->open_handles = 2;
  /* The first attempt starts from the loop, so no callback runs before
   * stg_fetch_start returns. */
  uv_timer_start(&f->retry_timer, on_retry, 0, 0);
  return 0;
out:
  free(f->url);
  free(f->dest);
  free(f->partial);
  free(f->validator);
  free(f->ca_file);
  free(f->sum_url);
  free(f->sig_url);
  mbedtls_pk_free(&f->key);
  stg_sha256_free(&f->sha);
  return rc;
}
