/* stg_sha256 (SHA extensions where present) against mbedTLS and the
 * standard test vectors, for every length around the block edges and
 * every way of splitting the input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/sha256.h>

#include "check.h"
#include "sha256.h"

static void hex(const unsigned char d[32], char out[65]) {
  for (int i = 0; i < 32; i++)
    sprintf(out + 2 * i, "%02x", d[i]);
}

static void stg_hex(const void *p, size_t n, char out[65]) {
  stg_sha256_t c;
  unsigned char d[32];
  stg_sha256_start(&c);
  stg_sha256_update(&c, p, n);
  stg_sha256_finish(&c, d);
  stg_sha256_free(&c);
  hex(d, out);
}

TEST(vectors) {
  char h[65];
  stg_hex("", 0, h);
  CHECK_STR(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  stg_hex("abc", 3, h);
  CHECK_STR(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  stg_hex(m, strlen(m), h);
  CHECK_STR(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  printf("accelerated: %s\n", stg_sha256_accelerated() ? "yes" : "no");
}

TEST(against_mbedtls) {
  size_t max = 1000;
  unsigned char *buf = malloc(max);
  REQUIRE(buf != NULL);
  srand(7);
  for (size_t i = 0; i < max; i++)
    buf[i] = (unsigned char)rand();
  for (size_t n = 0; n < max; n += (n < 200 ? 1 : 37)) {
    unsigned char want[32], got[32];
    mbedtls_sha256(buf, n, want, 0);
    /* In pieces of every size from 1 to 70. */
    for (size_t piece = 1; piece <= 70; piece += (n < 130 ? 1 : 23)) {
      stg_sha256_t c;
      stg_sha256_start(&c);
      for (size_t at = 0; at < n; at += piece)
        stg_sha256_update(&c, buf + at, n - at < piece ? n - at : piece);
      stg_sha256_finish(&c, got);
      stg_sha256_free(&c);
      if (memcmp(want, got, 32) != 0) {
        CHECK(!"digest differs from mbedTLS");
        printf("  length %zu in pieces of %zu\n", n, piece);
        free(buf);
        return;
      }
    }
  }
  free(buf);
}

TEST(restart) {
  stg_sha256_t c;
  unsigned char a[32], b[32];
  stg_sha256_start(&c);
  stg_sha256_update(&c, "garbage", 7);
  stg_sha256_start(&c); /* as fetch does for a new attempt */
  stg_sha256_update(&c, "abc", 3);
  stg_sha256_finish(&c, a);
  stg_sha256_free(&c);
  mbedtls_sha256((const unsigned char *)"abc", 3, b, 0);
  CHECK(memcmp(a, b, 32) == 0);
}

int main(void) {
  RUN(vectors);
  RUN(against_mbedtls);
  RUN(restart);
  return CHECK_DONE();
}
