#include "agentbin.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <mbedtls/sha256.h>
#include <uv.h>

#include "version.h"

#ifdef __APPLE__
#define ST_MTIM(st) ((st).st_mtimespec)
#define ST_CTIM(st) ((st).st_ctimespec)
#else
#define ST_MTIM(st) ((st).st_mtim)
#define ST_CTIM(st) ((st).st_ctim)
#endif

#define BIN_NAME "agent-runner"
#define RECORD_NAME "agent-runner.json"
#define LOCK_NAME ".agent-runner.lock"
/* Temp files: ".agent-runner.tmp-XXXXXX", ".agent-runner.json.tmp-XXXXXX". */
#define TMP_PREFIX ".agent-runner."
#define TMP_MARK ".tmp-"
#define RECORD_MAX (64u << 10) /* a record is a few hundred bytes */
#define LOCK_WAIT_MS 10000

/* The generated payload_info.c (cmd/agent-runner/embed.cmake). */
extern const char *const stg__agent_payload_origin;
extern const char stg__agent_payload_sha256[];
extern const unsigned long long stg__agent_payload_size;
const unsigned char *stg__agent_payload_data(void);

const stg_agentbin_payload_t *stg_agentbin_embedded(void) {
  static stg_agentbin_payload_t p;
  static int done;
  if (!done) {
    p.data = stg__agent_payload_data();
    p.size = p.data ? stg__agent_payload_size : 0;
    p.sha256 = p.data ? stg__agent_payload_sha256 : "";
    p.origin = stg__agent_payload_origin;
    done = 1;
  }
  return &p;
}

/* --- small helpers ------------------------------------------------------------------ */

static void fmt(char *buf, size_t len, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *buf, size_t len, const char *f, ...) {
  if (buf == NULL || len == 0)
    return;
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, len, f, ap);
  va_end(ap);
}

void stg_agentbin_human_size(uint64_t n, char *buf, size_t len) {
  if (n < 1024)
    fmt(buf, len, "%llu B", (unsigned long long)n);
  else if (n < (1u << 20))
    fmt(buf, len, "%.1f KiB", (double)n / 1024.0);
  else if (n < (1u << 30))
    fmt(buf, len, "%.1f MiB", (double)n / (1024.0 * 1024.0));
  else
    fmt(buf, len, "%.1f GiB", (double)n / (1024.0 * 1024.0 * 1024.0));
}

static void hex_of(const unsigned char d[32], char hex[65]) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    hex[2 * i] = digits[d[i] >> 4];
    hex[2 * i + 1] = digits[d[i] & 15];
  }
  hex[64] = '\0';
}

static bool is_hex64(const char *s) {
  if (s == NULL || strlen(s) != 64)
    return false;
  for (int i = 0; i < 64; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  return true;
}

static int64_t ts_ns(struct timespec ts) {
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void now_rfc3339(char *buf, size_t len) {
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int read_full(int fd, unsigned char *buf, size_t len, ssize_t *got) {
  *got = 0;
  for (;;) {
    ssize_t n = read(fd, buf, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    *got = n;
    return 0;
  }
}

static int write_full(int fd, const unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int stg_agentbin_sha256_file(const char *path, char hex[65], uint64_t *size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  mbedtls_sha256_context ctx;
  mbedtls_sha256_init(&ctx);
  unsigned char buf[65536];
  uint64_t total = 0;
  int rc = mbedtls_sha256_starts(&ctx, 0) == 0 ? 0 : UV_EIO;
  while (rc == 0) {
    ssize_t n;
    rc = read_full(fd, buf, sizeof buf, &n);
    if (rc != 0 || n == 0)
      break;
    total += (uint64_t)n;
    if (mbedtls_sha256_update(&ctx, buf, (size_t)n) != 0)
      rc = UV_EIO;
  }
  unsigned char d[32];
  if (rc == 0 && mbedtls_sha256_finish(&ctx, d) != 0)
    rc = UV_EIO;
  mbedtls_sha256_free(&ctx);
  close(fd);
  if (rc == 0) {
    hex_of(d, hex);
    if (size)
      *size = total;
  }
  return rc;
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  int rc = fsync(fd) == 0 ? 0 : -errno;
  close(fd);
  /* Some file systems refuse fsync on a directory; the rename stands. */
  if (rc == UV_EINVAL || rc == -ENOTSUP)
    rc = 0;
  return rc;
}

/* --- paths and the lock ------------------------------------------------------------- */

typedef struct {
  char dir[4096];    /* $home/bin */
  char bin[4096];    /* $home/bin/agent-runner */
  char record[4096]; /* $home/bin/agent-runner.json */
  char lock[4096];   /* $home/bin/.agent-runner.lock */
} paths_t;

static int get_paths(const stg_config_t *cfg, paths_t *p) {
  if (stg_config_path(cfg, "bin", p->dir, sizeof p->dir) == NULL ||
      stg_config_path(cfg, "bin/" BIN_NAME, p->bin, sizeof p->bin) == NULL ||
      stg_config_path(cfg, "bin/" RECORD_NAME, p->record, sizeof p->record) == NULL ||
      stg_config_path(cfg, "bin/" LOCK_NAME, p->lock, sizeof p->lock) == NULL)
    return UV_ENAMETOOLONG;
  return 0;
}

static bool configured(const stg_config_t *cfg) {
  return cfg->agent_runner.path != NULL && cfg->agent_runner.path[0] != '\0';
}

int stg_agentbin_path(const stg_config_t *cfg, char *buf, size_t len) {
  if (configured(cfg)) {
    if (strlen(cfg->agent_runner.path) >= len)
      return UV_ENAMETOOLONG;
    strcpy(buf, cfg->agent_runner.path);
    return 0;
  }
  return stg_config_path(cfg, "bin/" BIN_NAME, buf, len) ? 0 : UV_ENAMETOOLONG;
}

static int mkdir_p(const char *path, mode_t mode) {
  char tmp[4096];
  if (strlen(path) >= sizeof tmp)
    return UV_ENAMETOOLONG;
  strcpy(tmp, path);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(tmp, mode) != 0 && errno != EEXIST)
      return -errno;
    *p = '/';
  }
  if (mkdir(tmp, mode) != 0 && errno != EEXIST)
    return -errno;
  return 0;
}

/* Creates bin/ and takes the writers' lock; returns the fd in *fd. */
static int lock_bin(const paths_t *p, int *fd, char *desc, size_t desclen) {
  int rc = mkdir_p(p->dir, 0755);
  if (rc != 0) {
    fmt(desc, desclen, "create %s: %s", p->dir, uv_strerror(rc));
    return rc;
  }
  int l = open(p->lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (l < 0) {
    rc = -errno;
    fmt(desc, desclen, "open %s: %s", p->lock, uv_strerror(rc));
    return rc;
  }
  for (int waited = 0;; waited += 20) {
    if (flock(l, LOCK_EX | LOCK_NB) == 0)
      break;
    if (errno != EWOULDBLOCK && errno != EINTR) {
      rc = -errno;
      fmt(desc, desclen, "lock %s: %s", p->lock, uv_strerror(rc));
      close(l);
      return rc;
    }
    if (waited >= LOCK_WAIT_MS) {
      fmt(desc, desclen, "lock %s: held by another process for %d s", p->lock,
          LOCK_WAIT_MS / 1000);
      close(l);
      return UV_EBUSY;
    }
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
  }
  *fd = l;
  return 0;
}

static void unlock_bin(int fd) {
  if (fd >= 0)
    close(fd); /* releases the flock */
}

/* With the lock held: remove temp files left by a writer that crashed. */
static void remove_stale_temps(const paths_t *p) {
  DIR *d = opendir(p->dir);
  if (d == NULL)
    return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) != 0 ||
        strstr(e->d_name, TMP_MARK) == NULL)
      continue;
    char path[4096 + 256];
    snprintf(path, sizeof path, "%s/%s", p->dir, e->d_name);
    unlink(path);
  }
  closedir(d);
}

/* --- atomic writes ------------------------------------------------------------------ */

typedef struct {
  const unsigned char *data; /* bytes to write, or NULL to copy from fd */
  size_t len;                /* their length */
  int fd;                    /* the source file when data is NULL */
  const char *known_sha;     /* the digest of data, known (the embedded
                                payload's, from the build), or NULL: hash
                                while writing */
} source_t;

/* Maps in the pages of [p, p+len) of the binary before write() copies
 * from them: a write from pages not yet mapped falls back, page by page, to
 * a slow path that zeroes and copies again (docs/benchmarks.md, item 6). */
static void prefault(const unsigned char *p, size_t len) {
#ifdef MADV_POPULATE_READ
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t a = (uintptr_t)p & ~(page - 1);
  (void)madvise((void *)a, (uintptr_t)p + len - a, MADV_POPULATE_READ);
#else
  (void)p;
  (void)len;
#endif
}

/* Writes src to final (in dir) atomically: a temp file named after
 * tmp_name in dir, written, fsynced, chmod mode, renamed over final, dir
 * fsynced. Fills sha (hex) and the final file's stat. When expect_sha is
 * set and the content differs, nothing is renamed and UV_EINVAL returned. */
static int atomic_write(const char *dir, const char *final, const char *tmp_name,
                        const source_t *src, mode_t mode, const char *expect_sha,
                        char sha[65], struct stat *st, char *desc, size_t desclen) {
  char tmp[4096 + 64];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s/%sXXXXXX", dir, tmp_name) >= sizeof tmp)
    return UV_ENAMETOOLONG;
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    int rc = -errno;
    fmt(desc, desclen, "create a temp file in %s: %s", dir, uv_strerror(rc));
    return rc;
  }
  bool renamed = false;
  const char *what = "write";
  int rc = 0;
  mbedtls_sha256_context ctx;
  mbedtls_sha256_init(&ctx);
  if (mbedtls_sha256_starts(&ctx, 0) != 0) {
    rc = UV_EIO;
    goto out;
  }
  if (src->data != NULL) {
    prefault(src->data, src->len);
    rc = write_full(fd, src->data, src->len);
    /* The payload's digest was computed at build time: hashing 64 MiB of
     * our own read-only data again took 4x the write and fsync
     * (docs/benchmarks.md, item 6). */
    if (rc == 0 && src->known_sha == NULL &&
        mbedtls_sha256_update(&ctx, src->data, src->len) != 0)
      rc = UV_EIO;
  } else {
    unsigned char buf[65536];
    for (;;) {
      ssize_t n;
      rc = read_full(src->fd, buf, sizeof buf, &n);
      if (rc != 0) {
        what = "read the source of";
        break;
      }
      if (n == 0)
        break;
      rc = write_full(fd, buf, (size_t)n);
      if (rc == 0 && mbedtls_sha256_update(&ctx, buf, (size_t)n) != 0)
        rc = UV_EIO;
      if (rc != 0)
        break;
    }
  }
  if (rc != 0)
    goto out;
  unsigned char d[32];
  if (src->known_sha != NULL) {
    snprintf(sha, 65, "%s", src->known_sha);
  } else if (mbedtls_sha256_finish(&ctx, d) != 0) {
    rc = UV_EIO;
    goto out;
  } else {
    hex_of(d, sha);
  }
  if (expect_sha != NULL && strcmp(sha, expect_sha) != 0) {
    fmt(desc, desclen, "copy of %s has sha256 %s, expected %s: not installed", final, sha,
        expect_sha);
    rc = UV_EINVAL;
    goto out;
  }
  what = "fsync";
  if (fsync(fd) != 0) {
    rc = -errno;
    goto out;
  }
  what = "chmod";
  if (fchmod(fd, mode) != 0) {
    rc = -errno;
    goto out;
  }
  what = "close";
  int cfd = fd;
  fd = -1;
  if (close(cfd) != 0) {
    rc = -errno;
    goto out;
  }
  what = "rename";
  if (rename(tmp, final) != 0) {
    rc = -errno;
    goto out;
  }
  renamed = true;
  what = "fsync the directory of";
  rc = fsync_dir(dir);
  if (rc != 0)
    goto out;
  what = "stat";
  if (stat(final, st) != 0)
    rc = -errno;
out:
  mbedtls_sha256_free(&ctx);
  if (fd >= 0)
    close(fd);
  if (!renamed)
    unlink(tmp);
  if (rc != 0 && rc != UV_EINVAL)
    fmt(desc, desclen, "%s %s: %s", what, renamed ? final : tmp, uv_strerror(rc));
  return rc;
}

/* --- the record ----------------------------------------------------------------------- */

static void copy_str(char *dst, size_t len, const char *s) {
  snprintf(dst, len, "%s", s ? s : "");
}

/* 0, UV_ENOENT when there is none, or UV_EINVAL with why in err. */
static int record_read(const char *path, stg_agentbin_record_t *r, char *err, size_t errlen) {
  memset(r, 0, sizeof *r);
  struct stat st;
  if (stat(path, &st) != 0) {
    int rc = -errno;
    if (rc != UV_ENOENT)
      fmt(err, errlen, "stat %s: %s", path, uv_strerror(rc));
    return rc;
  }
  if (st.st_size > RECORD_MAX) {
    fmt(err, errlen, "%s: larger than %u bytes", path, RECORD_MAX);
    return UV_EINVAL;
  }
  json_error_t je;
  json_t *j = json_load_file(path, 0, &je);
  if (j == NULL) {
    fmt(err, errlen, "%s: line %d: %s", path, je.line, je.text);
    return UV_EINVAL;
  }
  const char *origin = NULL, *version = NULL, *sha = NULL, *when = NULL, *source = NULL;
  json_int_t size = -1, mtime = 0, ctime_ = 0, inode = 0;
  int rc = 0;
  if (json_unpack_ex(j, &je, 0, "{s:s, s:s, s:I, s:s, s:s, s:I, s:I, s:I, s?s}", "origin",
                     &origin, "version", &version, "size", &size, "sha256", &sha, "when",
                     &when, "mtime_ns", &mtime, "ctime_ns", &ctime_, "inode", &inode,
                     "source", &source) != 0) {
    fmt(err, errlen, "%s: %s", path, je.text);
    rc = UV_EINVAL;
  } else if (strcmp(origin, "embedded") != 0 && strcmp(origin, "downloaded") != 0 &&
             strcmp(origin, "installed") != 0) {
    fmt(err, errlen, "%s: origin '%s' is not embedded, downloaded or installed", path, origin);
    rc = UV_EINVAL;
  } else if (!is_hex64(sha) || size < 0) {
    fmt(err, errlen, "%s: bad sha256 or size", path);
    rc = UV_EINVAL;
  } else {
    copy_str(r->origin, sizeof r->origin, origin);
    copy_str(r->version, sizeof r->version, version);
    copy_str(r->sha256, sizeof r->sha256, sha);
    copy_str(r->when, sizeof r->when, when);
    copy_str(r->source, sizeof r->source, source);
    r->size = (uint64_t)size;
    r->mtime_ns = (int64_t)mtime;
    r->ctime_ns = (int64_t)ctime_;
    r->inode = (uint64_t)inode;
  }
  json_decref(j);
  return rc;
}

/* Writes the record for the file described by st, atomically. */
static int record_write(const paths_t *p, const char *origin, const char *version,
                        const char *sha, const char *source, const struct stat *st,
                        stg_agentbin_record_t *out, char *desc, size_t desclen) {
  stg_agentbin_record_t r;
  memset(&r, 0, sizeof r);
  copy_str(r.origin, sizeof r.origin, origin);
  copy_str(r.version, sizeof r.version, version && *version ? version : "unknown");
  copy_str(r.sha256, sizeof r.sha256, sha);
  copy_str(r.source, sizeof r.source, source);
  now_rfc3339(r.when, sizeof r.when);
  r.size = (uint64_t)st->st_size;
  r.mtime_ns = ts_ns(ST_MTIM(*st));
  r.ctime_ns = ts_ns(ST_CTIM(*st));
  r.inode = (uint64_t)st->st_ino;
  json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:s, s:I, s:I, s:I}", "origin", r.origin,
                        "version", r.version, "size", (json_int_t)r.size, "sha256", r.sha256,
                        "when", r.when, "mtime_ns", (json_int_t)r.mtime_ns, "ctime_ns",
                        (json_int_t)r.ctime_ns, "inode", (json_int_t)r.inode);
  if (j == NULL)
    return UV_ENOMEM;
  if (r.source[0] != '\0')
    json_object_set_new(j, "source", json_string(r.source));
  char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(j);
  if (s == NULL)
    return UV_ENOMEM;
  size_t n = strlen(s);
  char *line = malloc(n + 1);
  if (line == NULL) {
    free(s);
    return UV_ENOMEM;
  }
  memcpy(line, s, n);
  line[n] = '\n';
  free(s);
  source_t src = {(const unsigned char *)line, n + 1, -1, NULL};
  char dummy[65];
  struct stat rst;
  int rc = atomic_write(p->dir, p->record, TMP_PREFIX "json" TMP_MARK, &src, 0644, NULL,
                        dummy, &rst, desc, desclen);
  free(line);
  if (rc == 0 && out != NULL)
    *out = r;
  return rc;
}

/* --- deciding ---------------------------------------------------------------------------- */

typedef enum {
  ACT_NONE,           /* run it as it is */
  ACT_REFRESH_RECORD, /* the content is right: rewrite the record only */
  ACT_EXTRACT,        /* write the payload, then the record */
  ACT_MISSING         /* nothing to run: a fetch (or the user) must act */
} action_t;

static bool cheap_match(const stg_agentbin_record_t *r, const struct stat *st) {
  return r->size == (uint64_t)st->st_size && r->mtime_ns == ts_ns(ST_MTIM(*st)) &&
         r->ctime_ns == ts_ns(ST_CTIM(*st)) && r->inode == (uint64_t)st->st_ino;
}

static void short_sha(const char *sha, char out[16]) {
  snprintf(out, 16, "%.12s", sha && *sha ? sha : "-");
}

static const char *wanted_version(const stg_config_t *cfg) {
  const char *v = cfg->agent_runner.version;
  return v && *v ? v : stg_version();
}

/* Looks at the files and decides. st->plan says what and why. full: hash
 * even when the cheap check passes. Returns 0 or a negative error. */
static int evaluate(const stg_config_t *cfg, const stg_agentbin_payload_t *pl, bool full,
                    stg_agentbin_status_t *st, action_t *act) {
  memset(st, 0, sizeof *st);
  st->payload = pl;
  int rc = stg_agentbin_path(cfg, st->path, sizeof st->path);
  if (rc != 0) {
    fmt(st->plan, sizeof st->plan, "the agent-runner path is too long");
    return rc;
  }
  struct stat fst;
  if (configured(cfg)) {
    st->configured = true;
    if (stat(st->path, &fst) != 0) {
      rc = -errno;
      *act = ACT_MISSING;
      fmt(st->plan, sizeof st->plan, "configured [agent-runner] path %s: %s", st->path,
          uv_strerror(rc));
      return 0;
    }
    if (!S_ISREG(fst.st_mode) || access(st->path, X_OK) != 0) {
      *act = ACT_MISSING;
      fmt(st->plan, sizeof st->plan,
          "configured [agent-runner] path %s is not an executable file", st->path);
      return 0;
    }
    st->exists = true;
    st->size = (uint64_t)fst.st_size;
    if (full) {
      rc = stg_agentbin_sha256_file(st->path, st->sha256, NULL);
      if (rc != 0) {
        fmt(st->plan, sizeof st->plan, "read %s: %s", st->path, uv_strerror(rc));
        return rc;
      }
    }
    *act = ACT_NONE;
    fmt(st->plan, sizeof st->plan, "using the configured [agent-runner] path %s", st->path);
    return 0;
  }

  paths_t p;
  if ((rc = get_paths(cfg, &p)) != 0)
    return rc;
  rc = record_read(p.record, &st->record, st->record_error, sizeof st->record_error);
  if (rc == 0)
    st->have_record = true;
  else if (rc != UV_ENOENT && rc != UV_EINVAL) {
    fmt(st->plan, sizeof st->plan, "%s", st->record_error);
    return rc;
  }
  st->pinned = st->have_record && strcmp(st->record.origin, "installed") == 0;

  if (stat(p.bin, &fst) == 0) {
    /* Anything but a regular file counts as missing; the rename that
     * replaces it says why if it cannot. */
    st->exists = S_ISREG(fst.st_mode);
    st->size = st->exists ? (uint64_t)fst.st_size : 0;
  } else if (errno != ENOENT && errno != ENOTDIR) {
    rc = -errno;
    fmt(st->plan, sizeof st->plan, "stat %s: %s", p.bin, uv_strerror(rc));
    return rc;
  }

  /* The cheap check, then the hash when it fails or when asked. */
  bool cheap = st->have_record && st->exists && cheap_match(&st->record, &fst);
  bool hashed = false;
  if (st->exists && (full || !cheap)) {
    rc = stg_agentbin_sha256_file(p.bin, st->sha256, NULL);
    if (rc != 0) {
      fmt(st->plan, sizeof st->plan, "read %s: %s", p.bin, uv_strerror(rc));
      return rc;
    }
    hashed = true;
  }
  if (st->have_record && st->exists)
    st->matches_record = hashed ? strcmp(st->sha256, st->record.sha256) == 0 : cheap;
  bool intact = st->matches_record; /* content equals the record */
  bool stale_stats = intact && !cheap;

  char rs[16], ps[16], fs[16], hs[32];
  short_sha(st->record.sha256, rs);
  short_sha(pl->sha256, ps);
  short_sha(st->sha256, fs);
  stg_agentbin_human_size(pl->size, hs, sizeof hs);

  if (st->pinned) {
    if (!st->exists) {
      *act = ACT_MISSING;
      fmt(st->plan, sizeof st->plan,
          "the pinned agent-runner (installed %s) is missing from %s: install it again "
          "(stigmer agent-runner install PATH) or unpin (stigmer agent-runner reset)",
          st->record.when, p.bin);
    } else if (stale_stats) {
      *act = ACT_REFRESH_RECORD;
      fmt(st->plan, sizeof st->plan,
          "the pinned agent-runner (sha256 %s...) was touched but its content is unchanged",
          rs);
    } else if (!intact) {
      *act = ACT_NONE;
      fmt(st->plan, sizeof st->plan,
          "the pinned agent-runner changed since it was installed (sha256 %s..., recorded "
          "%s...); running it as it is",
          fs, rs);
    } else {
      *act = ACT_NONE;
      fmt(st->plan, sizeof st->plan, "using the pinned agent-runner (installed %s, sha256 %s...)",
          st->record.when, rs);
    }
    return 0;
  }

  if (pl->data != NULL) {
    bool rec_is_payload = st->have_record && strcmp(st->record.origin, "embedded") == 0 &&
                          strcmp(st->record.sha256, pl->sha256) == 0 &&
                          st->record.size == pl->size;
    if (rec_is_payload && intact && !stale_stats) {
      *act = ACT_NONE;
      fmt(st->plan, sizeof st->plan, "the embedded agent-runner is in place (sha256 %s..., %s)",
          ps, hs);
      return 0;
    }
    if (st->exists && !hashed) {
      rc = stg_agentbin_sha256_file(p.bin, st->sha256, NULL);
      if (rc != 0) {
        fmt(st->plan, sizeof st->plan, "read %s: %s", p.bin, uv_strerror(rc));
        return rc;
      }
      short_sha(st->sha256, fs);
      hashed = true;
    }
    if (st->exists && strcmp(st->sha256, pl->sha256) == 0) {
      *act = ACT_REFRESH_RECORD;
      fmt(st->plan, sizeof st->plan,
          "%s matches the embedded payload (sha256 %s...); %s", p.bin, ps,
          !st->have_record
              ? (st->record_error[0] ? "its record was unreadable, rewriting it"
                                     : "its record was missing, writing it")
              : "its record was stale, rewriting it");
      return 0;
    }
    *act = ACT_EXTRACT;
    char why[600];
    if (!st->exists)
      fmt(why, sizeof why, "binary was missing");
    else if (!st->have_record && st->record_error[0])
      fmt(why, sizeof why, "record unreadable (%s)", st->record_error);
    else if (!st->have_record)
      fmt(why, sizeof why, "binary had no record (sha256 %s...)", fs);
    else if (strcmp(st->record.origin, "embedded") != 0)
      fmt(why, sizeof why, "replacing the %s agent-runner (version %s)", st->record.origin,
          st->record.version);
    else if (!rec_is_payload)
      fmt(why, sizeof why, "the embedded payload changed (was sha256 %s...)", rs);
    else
      fmt(why, sizeof why, "binary changed on disk (sha256 %s..., expected %s...)", fs, ps);
    fmt(st->plan, sizeof st->plan, "extract the embedded agent-runner (sha256 %s..., %s): %s",
        ps, hs, why);
    return 0;
  }

  /* Nothing embedded: a downloaded (or earlier extracted) binary, or a fetch. */
  if (!st->exists) {
    *act = ACT_MISSING;
    fmt(st->plan, sizeof st->plan,
        "no agent-runner is embedded in this build and %s is missing: needs a fetch", p.bin);
  } else if (!st->have_record) {
    *act = ACT_MISSING;
    fmt(st->plan, sizeof st->plan,
        "%s has no %s (%s): needs a fetch, or `stigmer agent-runner install PATH` to pin it",
        p.bin, st->record_error[0] ? "readable record" : "record",
        st->record_error[0] ? st->record_error : "not written by stigmer");
  } else if (!intact) {
    *act = ACT_MISSING;
    fmt(st->plan, sizeof st->plan,
        "%s changed since it was recorded (sha256 %s..., recorded %s...): needs a fetch",
        p.bin, fs, rs);
  } else if (strcmp(st->record.version, wanted_version(cfg)) != 0 &&
             (stg_version_is_release() ||
              (cfg->agent_runner.version && cfg->agent_runner.version[0]))) {
    *act = ACT_MISSING;
    fmt(st->plan, sizeof st->plan,
        "the %s agent-runner is version %s, this stigmer wants %s: needs a fetch",
        st->record.origin, st->record.version, wanted_version(cfg));
  } else if (stale_stats) {
    *act = ACT_REFRESH_RECORD;
    fmt(st->plan, sizeof st->plan,
        "the %s agent-runner (sha256 %s...) was touched but its content is unchanged",
        st->record.origin, rs);
  } else {
    *act = ACT_NONE;
    fmt(st->plan, sizeof st->plan, "using the %s agent-runner (version %s, sha256 %s...)",
        st->record.origin, st->record.version, rs);
  }
  return 0;
}

/* --- acting ------------------------------------------------------------------------------ */

/* With the lock held: evaluate and act. */
static int ensure_locked(const stg_config_t *cfg, const paths_t *p,
                         const stg_agentbin_payload_t *pl, bool full,
                         stg_agentbin_state_t *state, char *desc, size_t desclen) {
  stg_agentbin_status_t *st = malloc(sizeof *st);
  if (st == NULL)
    return UV_ENOMEM;
  action_t act = ACT_MISSING;
  int rc = evaluate(cfg, pl, full, st, &act);
  if (rc != 0) {
    fmt(desc, desclen, "%s", st->plan);
    goto out;
  }
  struct stat fst;
  switch (act) {
  case ACT_NONE:
    *state = STG_AGENTBIN_READY;
    fmt(desc, desclen, "%s", st->plan);
    break;
  case ACT_MISSING:
    *state = STG_AGENTBIN_MISSING;
    fmt(desc, desclen, "%s", st->plan);
    break;
  case ACT_REFRESH_RECORD: {
    if (stat(p->bin, &fst) != 0) {
      rc = -errno;
      fmt(desc, desclen, "stat %s: %s", p->bin, uv_strerror(rc));
      goto out;
    }
    bool is_payload = pl->data != NULL && strcmp(st->sha256, pl->sha256) == 0;
    const char *origin = is_payload ? "embedded" : st->record.origin;
    const char *version = is_payload ? stg_version() : st->record.version;
    /* The sha256 hashed just now is the content's. */
    const char *sha = st->sha256[0] ? st->sha256 : st->record.sha256;
    rc = record_write(p, origin, version, sha, is_payload ? NULL : st->record.source, &fst,
                      NULL, desc, desclen);
    if (rc != 0)
      goto out;
    *state = STG_AGENTBIN_READY;
    fmt(desc, desclen, "%s", st->plan);
    break;
  }
  case ACT_EXTRACT: {
    source_t src = {pl->data, (size_t)pl->size, -1, pl->sha256};
    char sha[65];
    rc = atomic_write(p->dir, p->bin, TMP_PREFIX "tmp-", &src, 0755, pl->sha256, sha, &fst,
                      desc, desclen);
    if (rc == UV_EINVAL)
      fmt(desc, desclen, "the embedded payload does not hash to its build-time sha256 %s",
          pl->sha256);
    if (rc != 0)
      goto out;
    rc = record_write(p, "embedded", stg_version(), sha, NULL, &fst, NULL, desc, desclen);
    if (rc != 0)
      goto out;
    *state = STG_AGENTBIN_READY;
    fmt(desc, desclen, "extracted %s", st->plan + strlen("extract "));
    break;
  }
  }
out:
  free(st);
  return rc;
}

static const stg_agentbin_payload_t *payload_of(const stg_agentbin_options_t *opts) {
  return opts && opts->payload ? opts->payload : stg_agentbin_embedded();
}

int stg_agentbin_ensure_ex(const stg_config_t *cfg, const stg_agentbin_options_t *opts,
                           char *path, size_t pathlen, stg_agentbin_state_t *state,
                           char *desc, size_t desclen) {
  fmt(desc, desclen, "%s", "");
  *state = STG_AGENTBIN_MISSING;
  int rc = stg_agentbin_path(cfg, path, pathlen);
  if (rc != 0) {
    fmt(desc, desclen, "the agent-runner path does not fit in %zu bytes", pathlen);
    return rc;
  }
  bool full = opts && (opts->flags & STG_AGENTBIN_FULL_CHECK);
  const stg_agentbin_payload_t *pl = payload_of(opts);
  paths_t p;
  if ((rc = get_paths(cfg, &p)) != 0)
    return rc;
  if (configured(cfg))
    return ensure_locked(cfg, &p, pl, full, state, desc, desclen);
  int lfd = -1;
  if ((rc = lock_bin(&p, &lfd, desc, desclen)) != 0)
    return rc;
  remove_stale_temps(&p);
  rc = ensure_locked(cfg, &p, pl, full, state, desc, desclen);
  unlock_bin(lfd);
  return rc;
}

int stg_agentbin_ensure(const stg_config_t *cfg, char *path, size_t pathlen,
                        stg_agentbin_state_t *state, char *desc, size_t desclen) {
  stg_agentbin_options_t o = {STG_AGENTBIN_FULL_CHECK, NULL};
  return stg_agentbin_ensure_ex(cfg, &o, path, pathlen, state, desc, desclen);
}

int stg_agentbin_status(const stg_config_t *cfg, const stg_agentbin_options_t *opts,
                        stg_agentbin_status_t *st) {
  action_t act = ACT_MISSING;
  int rc = evaluate(cfg, payload_of(opts), true, st, &act);
  if (rc != 0)
    return rc;
  st->state = act == ACT_MISSING ? STG_AGENTBIN_MISSING : STG_AGENTBIN_READY;
  st->would_write = act == ACT_EXTRACT || act == ACT_REFRESH_RECORD;
  return 0;
}

int stg_agentbin_install_file(const stg_config_t *cfg, const char *src_path,
                              const char *origin, const char *version,
                              const char *sha256_hex, char *desc, size_t desclen) {
  fmt(desc, desclen, "%s", "");
  bool pin = strcmp(origin, "installed") == 0;
  if (!pin && strcmp(origin, "downloaded") != 0) {
    fmt(desc, desclen, "install: origin must be installed or downloaded, got '%s'", origin);
    return UV_EINVAL;
  }
  if (sha256_hex != NULL && !is_hex64(sha256_hex)) {
    fmt(desc, desclen, "install: expected sha256 as 64 lowercase hex digits, got '%s'",
        sha256_hex);
    return UV_EINVAL;
  }
  if (configured(cfg)) {
    fmt(desc, desclen,
        "[agent-runner] path is set to %s: the supervisor runs that file, so nothing is "
        "installed; unset it to use $STIGMER_HOME/bin/agent-runner",
        cfg->agent_runner.path);
    return UV_EPERM;
  }
  paths_t p;
  int rc = get_paths(cfg, &p);
  if (rc != 0)
    return rc;
  int sfd = open(src_path, O_RDONLY | O_CLOEXEC);
  if (sfd < 0) {
    rc = -errno;
    fmt(desc, desclen, "open %s: %s", src_path, uv_strerror(rc));
    return rc;
  }
  struct stat sst;
  if (fstat(sfd, &sst) != 0 || !S_ISREG(sst.st_mode) || sst.st_size == 0) {
    rc = UV_EINVAL;
    fmt(desc, desclen, "install %s: not a regular, non-empty file", src_path);
    close(sfd);
    return rc;
  }
  char abs_src[4096];
  if (realpath(src_path, abs_src) == NULL)
    copy_str(abs_src, sizeof abs_src, src_path);
  int lfd = -1;
  if ((rc = lock_bin(&p, &lfd, desc, desclen)) != 0) {
    close(sfd);
    return rc;
  }
  remove_stale_temps(&p);
  stg_agentbin_record_t old;
  char rerr[256];
  if (!pin && record_read(p.record, &old, rerr, sizeof rerr) == 0 &&
      strcmp(old.origin, "installed") == 0) {
    rc = UV_EBUSY;
    fmt(desc, desclen,
        "the agent-runner is pinned (installed %s): not replaced by the %s one; "
        "`stigmer agent-runner reset` unpins",
        old.when, origin);
    goto out;
  }
  source_t src = {NULL, 0, sfd, NULL};
  char sha[65];
  struct stat fst;
  rc = atomic_write(p.dir, p.bin, TMP_PREFIX "tmp-", &src, 0755, sha256_hex, sha, &fst, desc,
                    desclen);
  if (rc != 0)
    goto out;
  rc = record_write(&p, origin, version, sha, abs_src, &fst, NULL, desc, desclen);
  if (rc != 0)
    goto out;
  char hs[32];
  stg_agentbin_human_size((uint64_t)fst.st_size, hs, sizeof hs);
  if (pin)
    fmt(desc, desclen, "installed %s as %s (sha256 %.12s..., %s); pinned until "
        "`stigmer agent-runner reset`", abs_src, p.bin, sha, hs);
  else
    fmt(desc, desclen, "installed the downloaded agent-runner %s (sha256 %.12s..., %s)",
        version && *version ? version : "unknown", sha, hs);
out:
  unlock_bin(lfd);
  close(sfd);
  return rc;
}

int stg_agentbin_reset(const stg_config_t *cfg, const stg_agentbin_options_t *opts,
                       stg_agentbin_state_t *state, char *desc, size_t desclen) {
  fmt(desc, desclen, "%s", "");
  *state = STG_AGENTBIN_MISSING;
  if (configured(cfg)) {
    fmt(desc, desclen,
        "[agent-runner] path is set to %s: nothing to reset; unset it to use "
        "$STIGMER_HOME/bin/agent-runner",
        cfg->agent_runner.path);
    return UV_EPERM;
  }
  paths_t p;
  int rc = get_paths(cfg, &p);
  if (rc != 0)
    return rc;
  int lfd = -1;
  if ((rc = lock_bin(&p, &lfd, desc, desclen)) != 0)
    return rc;
  remove_stale_temps(&p);
  stg_agentbin_record_t old;
  char rerr[256];
  bool was_pinned = record_read(p.record, &old, rerr, sizeof rerr) == 0 &&
                    strcmp(old.origin, "installed") == 0;
  /* The record first: a crash in between leaves a binary without a record,
   * which the next ensure() replaces. */
  const char *files[2] = {p.record, p.bin};
  for (int i = 0; i < 2; i++) {
    if (unlink(files[i]) != 0 && errno != ENOENT) {
      rc = -errno;
      fmt(desc, desclen, "remove %s: %s", files[i], uv_strerror(rc));
      goto out;
    }
  }
  if ((rc = fsync_dir(p.dir)) != 0) {
    fmt(desc, desclen, "fsync %s: %s", p.dir, uv_strerror(rc));
    goto out;
  }
  char ed[1024];
  rc = ensure_locked(cfg, &p, payload_of(opts), true, state, ed, sizeof ed);
  fmt(desc, desclen, "%s; %s", was_pinned ? "unpinned and removed the installed agent-runner"
                                          : "removed the agent-runner and its record", ed);
out:
  unlock_bin(lfd);
  return rc;
}
