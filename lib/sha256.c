#include "sha256.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define STG_SHA_NI 1
#include <cpuid.h>
#include <immintrin.h>
#endif

#ifdef STG_SHA_NI
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

/* Hashes whole 64-byte blocks with SHA256RNDS2/MSG1/MSG2: four rounds per
 * step, the message schedule kept in four registers. */
__attribute__((target("sha,sse4.1,ssse3"))) static void blocks_ni(uint32_t h[8],
                                                                  const unsigned char *p,
                                                                  size_t nblocks) {
  const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i tmp = _mm_loadu_si128((const __m128i *)&h[0]);
  __m128i s1 = _mm_loadu_si128((const __m128i *)&h[4]);
  tmp = _mm_shuffle_epi32(tmp, 0xB1);        /* CDAB */
  s1 = _mm_shuffle_epi32(s1, 0x1B);          /* EFGH */
  __m128i s0 = _mm_alignr_epi8(tmp, s1, 8);  /* ABEF */
  s1 = _mm_blend_epi16(s1, tmp, 0xF0);       /* CDGH */
  while (nblocks--) {
    __m128i abef = s0, cdgh = s1, m[4], msg;
    for (int g = 0; g < 16; g++) {
      if (g < 4)
        m[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * g)), mask);
      msg = _mm_add_epi32(m[g & 3], _mm_loadu_si128((const __m128i *)&K[4 * g]));
      s1 = _mm_sha256rnds2_epu32(s1, s0, msg);
      if (g >= 3 && g <= 14) {
        __m128i t = _mm_alignr_epi8(m[g & 3], m[(g + 3) & 3], 4);
        m[(g + 1) & 3] = _mm_sha256msg2_epu32(_mm_add_epi32(m[(g + 1) & 3], t), m[g & 3]);
      }
      msg = _mm_shuffle_epi32(msg, 0x0E);
      s0 = _mm_sha256rnds2_epu32(s0, s1, msg);
      if (g >= 1 && g <= 12)
        m[(g + 3) & 3] = _mm_sha256msg1_epu32(m[(g + 3) & 3], m[g & 3]);
    }
    s0 = _mm_add_epi32(s0, abef);
    s1 = _mm_add_epi32(s1, cdgh);
    p += 64;
  }
  tmp = _mm_shuffle_epi32(s0, 0x1B);         /* FEBA */
  s1 = _mm_shuffle_epi32(s1, 0xB1);          /* DCHG */
  s0 = _mm_blend_epi16(tmp, s1, 0xF0);       /* DCBA */
  s1 = _mm_alignr_epi8(s1, tmp, 8);          /* ABEF */
  _mm_storeu_si128((__m128i *)&h[0], s0);
  _mm_storeu_si128((__m128i *)&h[4], s1);
}
#endif

bool stg_sha256_accelerated(void) {
#ifdef STG_SHA_NI
  static int have = -1;
  if (have < 0) {
    unsigned a, b, c, d;
    bool sha = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29));
    bool sse = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 19)) && (c & (1u << 9));
    have = sha && sse;
  }
  return have;
#else
  return false;
#endif
}

void stg_sha256_start(stg_sha256_t *c) {
  static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  c->ni = stg_sha256_accelerated();
  c->bytes = 0;
  c->n = 0;
  memcpy(c->h, iv, sizeof iv);
  if (!c->ni) {
    mbedtls_sha256_init(&c->m);
    mbedtls_sha256_starts(&c->m, 0);
  }
}

void stg_sha256_update(stg_sha256_t *c, const void *data, size_t len) {
  const unsigned char *p = data;
  if (!c->ni) {
    mbedtls_sha256_update(&c->m, p, len);
    return;
  }
#ifdef STG_SHA_NI
  c->bytes += len;
  if (c->n > 0) {
    size_t k = 64 - c->n < len ? 64 - c->n : len;
    memcpy(c->buf + c->n, p, k);
    c->n += k;
    p += k;
    len -= k;
    if (c->n < 64)
      return;
    blocks_ni(c->h, c->buf, 1);
    c->n = 0;
  }
  if (len >= 64) {
    blocks_ni(c->h, p, len / 64);
    p += len & ~(size_t)63;
    len &= 63;
  }
  memcpy(c->buf, p, len);
  c->n = len;
#endif
}

void stg_sha256_finish(stg_sha256_t *c, unsigned char out[32]) {
  if (!c->ni) {
    mbedtls_sha256_finish(&c->m, out);
    return;
  }
#ifdef STG_SHA_NI
  uint64_t bits = c->bytes * 8;
  unsigned char pad[72] = {0x80};
  size_t padlen = (c->n < 56 ? 56 : 120) - c->n;
  unsigned char lenbe[8];
  for (int i = 0; i < 8; i++)
    lenbe[i] = (unsigned char)(bits >> (56 - 8 * i));
  uint64_t keep = c->bytes;
  stg_sha256_update(c, pad, padlen);
  stg_sha256_update(c, lenbe, 8);
  c->bytes = keep;
  for (int i = 0; i < 8; i++) {
    out[4 * i] = (unsigned char)(c->h[i] >> 24);
    out[4 * i + 1] = (unsigned char)(c->h[i] >> 16);
    out[4 * i + 2] = (unsigned char)(c->h[i] >> 8);
    out[4 * i + 3] = (unsigned char)c->h[i];
  }
#endif
}

void stg_sha256_free(stg_sha256_t *c) {
  if (!c->ni)
    mbedtls_sha256_free(&c->m);
}
