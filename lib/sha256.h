/* stg_sha256: SHA-256 with the x86 SHA extensions where the CPU has them,
 * mbedTLS's portable code elsewhere. mbedTLS 3.6 accelerates SHA-256 only
 * on Arm; on x86-64 its C code took 40% of a verified download's CPU
 * (docs/benchmarks.md, item 7). Same digests, same streaming use. */
#ifndef STG_SHA256_H
#define STG_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mbedtls/sha256.h>

typedef struct {
  bool ni;                   /* the SHA extensions are used */
  uint32_t h[8];             /* state (ni) */
  uint64_t bytes;            /* hashed so far (ni) */
  unsigned char buf[64];     /* a partial block (ni) */
  size_t n;                  /* bytes in buf (ni) */
  mbedtls_sha256_context m;  /* the portable path (!ni) */
} stg_sha256_t;

/* Starts a digest (again); init before the first start is not needed. */
void stg_sha256_start(stg_sha256_t *c);
void stg_sha256_update(stg_sha256_t *c, const void *data, size_t len);
/* The digest; c needs stg_sha256_start before its next use. */
void stg_sha256_finish(stg_sha256_t *c, unsigned char out[32]);
/* Frees what the portable path holds (nothing to free with ni). */
void stg_sha256_free(stg_sha256_t *c);
/* Whether this CPU takes the SHA-extensions path (for tests and logs). */
bool stg_sha256_accelerated(void);

#endif
