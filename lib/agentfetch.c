/* Fetching the agent-runner: version, URL, cache, install from the cache.
 * See agentfetch.h and docs/agent-runner.md. */
#include "agentfetch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agentbin.h"
#include "version.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

static void fmt(char *buf, size_t len, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *buf, size_t len, const char *f, ...) {
  if (buf == NULL || len == 0)
    return;
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, len, f, ap);
  va_end(ap);
}

static bool is_set(const char *s) { return s != NULL && s[0] != '\0'; }

/* A version names a directory: no separators, no dot-only names, printable. */
static bool version_ok(const char *v) {
  if (!is_set(v) || strcmp(v, ".") == 0 || strcmp(v, "..") == 0 || strlen(v) >= 128)
    return false;
  for (const char *p = v; *p; p++)
    if (*p == '/' || *p == '\\' || (unsigned char)*p <= ' ' || *p == 0x7f)
      return false;
  return true;
}

/* Expands {version}, {os} and {arch}. 0, UV_EINVAL (unknown placeholder, why
 * says which) or UV_ENAMETOOLONG. */
static int expand_url(const char *tmpl, const char *version, char *out, size_t outlen,
                      char *why, size_t whylen) {
  size_t o = 0;
  for (const char *p = tmpl; *p;) {
    const char *sub = NULL;
    size_t skip = 1;
    if (*p == '{') {
      const char *end = strchr(p, '}');
      if (end == NULL) {
        fmt(why, whylen, "[agent-runner] url: '{' without '}' in %s", tmpl);
        return UV_EINVAL;
      }
      size_t n = (size_t)(end - p + 1);
      if (n == 9 && strncmp(p, "{version}", n) == 0)
        sub = version;
      else if (n == 4 && strncmp(p, "{os}", n) == 0)
        sub = stg_version_os();
      else if (n == 6 && strncmp(p, "{arch}", n) == 0)
        sub = stg_version_arch();
      else {
        fmt(why, whylen, "[agent-runner] url: unknown placeholder %.*s (known: {version}, "
            "{os}, {arch})", (int)n, p);
        return UV_EINVAL;
      }
      skip = n;
    }
    size_t add = sub ? strlen(sub) : 1;
    if (o + add + 1 > outlen) {
      fmt(why, whylen, "[agent-runner] url: too long once expanded");
      return UV_ENAMETOOLONG;
    }
    memcpy(out + o, sub ? sub : p, add);
    o += add;
    p += skip;
  }
  out[o] = '\0';
  return 0;
}

int stg_agentfetch_plan(const stg_config_t *cfg, stg_agentfetch_plan_t *p, char *why,
                        size_t whylen) {
  memset(p, 0, sizeof *p);
  fmt(why, whylen, "%s", "");
  if (is_set(cfg->agent_runner.path)) {
    fmt(why, whylen, "[agent-runner] path is set (%s): that file is used as it is, never "
        "fetched", cfg->agent_runner.path);
    return UV_EPERM;
  }
  const char *v = cfg->agent_runner.version;
  if (!is_set(v)) {
    if (!stg_version_is_release()) {
      fmt(why, whylen,
          "this is a development build (version %s): there is no release of the "
          "agent-runner to fetch for it. Install one with `stigmer agent-runner install "
          "PATH` (or `make install-agent-runner` in the source tree), or set "
          "[agent-runner] version in config.ini to fetch that release",
          stg_version());
      return UV_ENOTSUP;
    }
    v = stg_version();
  }
  if (!version_ok(v)) {
    fmt(why, whylen, "[agent-runner] version '%s' cannot name a cache directory "
        "(no '/', spaces or control characters)", v);
    return UV_EINVAL;
  }
  snprintf(p->version, sizeof p->version, "%s", v);
  int rc = expand_url(cfg->agent_runner.url, v, p->url, sizeof p->url, why, whylen);
  if (rc != 0)
    return rc;
  int n = snprintf(p->dir, sizeof p->dir, "%s/cache/agent-runner/%s", cfg->home, v);
  if (n < 0 || (size_t)n >= sizeof p->dir) {
    fmt(why, whylen, "%s: the cache path is too long", cfg->home);
    return UV_ENAMETOOLONG;
  }
  snprintf(p->file, sizeof p->file, "%s/agent-runner", p->dir);
  snprintf(p->sidecar, sizeof p->sidecar, "%s.sha256", p->file);

  /* A pinned binary is never replaced by a download. */
  stg_agentbin_status_t *st = malloc(sizeof *st);
  if (st == NULL)
    return UV_ENOMEM;
  rc = stg_agentbin_status(cfg, NULL, st);
  if (rc == 0 && st->pinned) {
    fmt(why, whylen, "the agent-runner is pinned (installed, version %s): nothing is "
        "fetched over it; `stigmer agent-runner reset` unpins", st->record.version);
    rc = UV_EBUSY;
  } else {
    rc = 0; /* an unreadable bin/ shows up again when installing */
  }
  free(st);
  return rc;
}

static bool is_hex64(const char *s) {
  for (int i = 0; i < 64; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  return true;
}

/* A sidecar: "<hex>  agent-runner\n", then "key <hex>\n" when the download's
 * signature was checked (the SHA-256 of the public key file). 0 with hex
 * (and key, "" when none) filled, or -errno / UV_EINVAL. */
static int read_sidecar(const char *path, char hex[65], char key[65]) {
  FILE *f = fopen(path, "re");
  if (f == NULL)
    return -errno;
  char line[256] = "", kline[256] = "";
  bool got = fgets(line, sizeof line, f) != NULL;
  if (got && fgets(kline, sizeof kline, f) != NULL && strncmp(kline, "key ", 4) == 0 &&
      is_hex64(kline + 4)) {
    memcpy(key, kline + 4, 64);
    key[64] = '\0';
  } else {
    key[0] = '\0';
  }
  fclose(f);
  if (!got)
    return UV_EINVAL;
  if (!is_hex64(line))
    return UV_EINVAL;
  if (line[64] != '\0' && line[64] != ' ' && line[64] != '\n')
    return UV_EINVAL;
  memcpy(hex, line, 64);
  hex[64] = '\0';
  return 0;
}

/* Writes the sidecar atomically; key: the public key's digest, or "". */
static int write_sidecar(const char *path, const char *hex, const char *key) {
  char tmp[4400];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return -errno;
  char line[256];
  int n = snprintf(line, sizeof line, "%s  agent-runner\n%s%s%s", hex, key[0] ? "key " : "",
                   key, key[0] ? "\n" : "");
  int rc = 0;
  if (write(fd, line, (size_t)n) != n || fsync(fd) != 0)
    rc = errno ? -errno : UV_EIO;
  if (close(fd) != 0 && rc == 0)
    rc = -errno;
  if (rc == 0 && rename(tmp, path) != 0)
    rc = -errno;
  if (rc != 0)
    unlink(tmp);
  return rc;
}

static void lower(char *s) {
  for (; *s; s++)
    if (*s >= 'A' && *s <= 'F')
      *s = (char)(*s - 'A' + 'a');
}

int stg_agentfetch_install_cached(const stg_config_t *cfg, const stg_agentfetch_plan_t *p,
                                  char *desc, size_t desclen) {
  char want[65], have[65], key[65];
  uint64_t size = 0;
  struct stat sb;
  if (stat(p->file, &sb) != 0) {
    fmt(desc, desclen, "agent-runner %s is not in the cache (%s)", p->version, p->dir);
    return 1;
  }
  int rc = read_sidecar(p->sidecar, want, key);
  if (rc != 0) {
    fmt(desc, desclen, "the cached agent-runner %s has no verified digest (%s: %s)",
        p->version, p->sidecar, rc == UV_EINVAL ? "not a digest" : uv_strerror(rc));
    return 1;
  }
  if (is_set(cfg->agent_runner.sha256)) {
    char pin[65];
    snprintf(pin, sizeof pin, "%s", cfg->agent_runner.sha256);
    lower(pin);
    if (strcmp(pin, want) != 0) {
      fmt(desc, desclen, "the cached agent-runner %s (sha256 %.12s...) is not the one "
          "[agent-runner] sha256 pins (%.12s...)", p->version, want, pin);
      return 1;
    }
  }
  if (is_set(cfg->agent_runner.public_key)) {
    /* Only a download whose signature this key checked. */
    char kh[65];
    if (stg_agentbin_sha256_file(cfg->agent_runner.public_key, kh, NULL) != 0 ||
        strcmp(kh, key) != 0) {
      fmt(desc, desclen, "the cached agent-runner %s was not verified with the configured "
          "public_key (%s)", p->version, cfg->agent_runner.public_key);
      return 1;
    }
  }
  rc = stg_agentbin_sha256_file(p->file, have, &size);
  if (rc != 0) {
    fmt(desc, desclen, "read %s: %s", p->file, uv_strerror(rc));
    return 1;
  }
  if (strcmp(have, want) != 0) {
    fmt(desc, desclen, "the cached agent-runner %s changed since it was verified "
        "(sha256 %.12s..., verified %.12s...)", p->version, have, want);
    return 1;
  }
  char idesc[1024] = "";
  rc = stg_agentbin_install_file(cfg, p->file, "downloaded", p->version, want, idesc,
                                 sizeof idesc);
  if (rc != 0) {
    fmt(desc, desclen, "install the cached agent-runner %s: %s", p->version,
        idesc[0] ? idesc : uv_strerror(rc));
    return rc;
  }
  char hs[32];
  stg_agentbin_human_size(size, hs, sizeof hs);
  fmt(desc, desclen, "installed agent-runner %s from the cache (sha256 %.12s..., %s)",
      p->version, want, hs);
  return 0;
}

/* --- the download ------------------------------------------------------------------- */

static int mkdirs(const char *path) {
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *s = buf + 1; *s; s++) {
    if (*s != '/')
      continue;
    *s = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
      return -errno;
    *s = '/';
  }
  if (mkdir(buf, 0755) != 0 && errno != EEXIST)
    return -errno;
  return 0;
}

static void on_progress(stg_fetch_t *f, uint64_t done, uint64_t total, double rate) {
  stg_agentfetch_t *af = container_of(f, stg_agentfetch_t, fetch);
  af->bytes = done;
  af->total = total;
  af->rate = rate;
  af->waiting = false;
  if (af->o.progress)
    af->o.progress(af);
}

static void on_failure(stg_fetch_t *f, stg_fetch_error_t kind, const char *reason,
                       bool will_retry, uint64_t retry_in_ms) {
  stg_agentfetch_t *af = container_of(f, stg_agentfetch_t, fetch);
  (void)kind;
  af->attempts++;
  snprintf(af->last_error, sizeof af->last_error, "%s", reason);
  af->waiting = will_retry;
  af->retry_at = uv_now(f->loop) + retry_in_ms;
  af->rate = 0;
  if (af->o.failure)
    af->o.failure(af, reason, will_retry, retry_in_ms);
}

static void on_done(stg_fetch_t *f, int status, const char *sha256_hex) {
  stg_agentfetch_t *af = container_of(f, stg_agentfetch_t, fetch);
  af->waiting = false;
  if (status == 0) {
    /* Still under the lock: the digest belongs to the file just renamed. */
    int rc = write_sidecar(af->plan.sidecar, sha256_hex, af->key);
    if (rc != 0) {
      fmt(af->last_error, sizeof af->last_error, "write %s: %s", af->plan.sidecar,
               uv_strerror(rc));
      status = rc;
    }
  }
  if (af->lock_fd >= 0) {
    close(af->lock_fd);
    af->lock_fd = -1;
  }
  af->o.done(af, status);
}

int stg_agentfetch_start(uv_loop_t *loop, stg_agentfetch_t *af,
                         const stg_agentfetch_options_t *o, char *desc, size_t desclen) {
  const stg_config_t *cfg = o->cfg;
  void *data = o->data;
  memset(af, 0, sizeof *af);
  af->data = data;
  af->o = *o;
  af->o.cfg = NULL; /* not kept */
  af->plan = *o->plan;
  af->o.plan = &af->plan;
  af->lock_fd = -1;
  int rc = mkdirs(af->plan.dir);
  if (rc != 0) {
    fmt(desc, desclen, "mkdir %s: %s", af->plan.dir, uv_strerror(rc));
    return rc;
  }
  char lock[4200];
  snprintf(lock, sizeof lock, "%s/.lock", af->plan.dir);
  af->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (af->lock_fd < 0) {
    rc = -errno;
    fmt(desc, desclen, "open %s: %s", lock, uv_strerror(rc));
    return rc;
  }
  if (flock(af->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    rc = errno == EWOULDBLOCK ? UV_EBUSY : -errno;
    if (rc == UV_EBUSY)
      fmt(desc, desclen, "another stigmer is downloading agent-runner %s into %s",
          af->plan.version, af->plan.dir);
    else
      fmt(desc, desclen, "lock %s: %s", lock, uv_strerror(rc));
    goto fail;
  }
  /* Whatever digest was recorded is for a file the download replaces. */
  if (unlink(af->plan.sidecar) != 0 && errno != ENOENT) {
    rc = -errno;
    fmt(desc, desclen, "remove %s: %s", af->plan.sidecar, uv_strerror(rc));
    goto fail;
  }
  stg_fetch_options_t fo;
  memset(&fo, 0, sizeof fo);
  fo.url = af->plan.url;
  fo.sha256_hex = is_set(cfg->agent_runner.sha256) ? cfg->agent_runner.sha256 : NULL;
  fo.public_key = is_set(cfg->agent_runner.public_key) ? cfg->agent_runner.public_key : NULL;
  /* The key's digest goes into the sidecar (stg_fetch_start reports a
   * missing key file). */
  if (fo.public_key == NULL || stg_agentbin_sha256_file(fo.public_key, af->key, NULL) != 0)
    af->key[0] = '\0';
  fo.dest = af->plan.file;
  fo.mode = 0755;
  fo.ca_file = is_set(cfg->agent_runner.ca_file) ? cfg->agent_runner.ca_file : NULL;
  fo.allow_http = cfg->agent_runner.allow_http;
  fo.max_size = cfg->agent_runner.max_size;
  fo.retry_initial_ms = o->retry_initial_ms;
  fo.retry_max_ms = o->retry_max_ms;
  fo.max_attempts = o->max_attempts;
  fo.progress = on_progress;
  fo.failure = on_failure;
  fo.done = on_done;
  rc = stg_fetch_start(loop, &af->fetch, &fo);
  if (rc != 0) {
    switch (rc) {
    case UV_EINVAL:
      fmt(desc, desclen, "fetch %s: refused: an http:// URL needs [agent-runner] "
          "allow_http = yes, and a public_key must be an ECDSA P-256 key", af->plan.url);
      break;
    case UV_ENOENT:
      fmt(desc, desclen, "fetch %s: no CA bundle found (set [agent-runner] ca_file) or "
          "a configured ca_file/public_key is missing", af->plan.url);
      break;
    default:
      fmt(desc, desclen, "fetch %s: %s", af->plan.url, uv_strerror(rc));
    }
    goto fail;
  }
  return 0;
fail:
  close(af->lock_fd);
  af->lock_fd = -1;
  return rc;
}

void stg_agentfetch_cancel(stg_agentfetch_t *af) { stg_fetch_cancel(&af->fetch); }

void stg_agentfetch_format_progress(uint64_t bytes, uint64_t total, double rate, char *buf,
                                    size_t len) {
  char b[32], t[32], r[32];
  stg_agentbin_human_size(bytes, b, sizeof b);
  stg_agentbin_human_size(rate > 0 ? (uint64_t)rate : 0, r, sizeof r);
  if (total > 0) {
    stg_agentbin_human_size(total, t, sizeof t);
    unsigned pct = (unsigned)(bytes >= total ? 100 : bytes * 100 / total);
    fmt(buf, len, "%s / %s (%u%%), %s/s", b, t, pct, r);
  } else {
    fmt(buf, len, "%s, %s/s", b, r);
  }
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int stg_agentfetch_cache_list(const stg_config_t *cfg, stg_agentfetch_cache_fn fn, void *arg) {
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/cache/agent-runner", cfg->home);
  DIR *d = opendir(dir);
  if (d == NULL)
    return errno == ENOENT ? 0 : -errno;
  char **names = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.')
      continue;
    if (n == cap) {
      size_t nc = cap ? cap * 2 : 16;
      if (nc > 4096)
        break; /* a hard cap: more versions than anyone keeps */
      char **nn = realloc(names, nc * sizeof *nn);
      if (nn == NULL) {
        rc = UV_ENOMEM;
        goto out;
      }
      names = nn;
      cap = nc;
    }
    if ((names[n] = strdup(de->d_name)) == NULL) {
      rc = UV_ENOMEM;
      goto out;
    }
    n++;
  }
  if (n > 1)
    qsort(names, n, sizeof *names, cmp_str);
  for (size_t i = 0; i < n; i++) {
    char file[4600], side[4700], part[4700], hex[65] = "";
    snprintf(file, sizeof file, "%s/%s/agent-runner", dir, names[i]);
    snprintf(side, sizeof side, "%s.sha256", file);
    snprintf(part, sizeof part, "%s.partial", file);
    struct stat sb;
    uint64_t size = 0, partial = 0;
    char key[65];
    if (stat(file, &sb) == 0 && read_sidecar(side, hex, key) == 0)
      size = (uint64_t)sb.st_size;
    else
      hex[0] = '\0';
    if (stat(part, &sb) == 0)
      partial = (uint64_t)sb.st_size;
    fn(names[i], size, hex, partial, arg);
  }
out:
  closedir(d);
  for (size_t i = 0; i < n; i++)
    free(names[i]);
  free(names);
  return rc;
}
