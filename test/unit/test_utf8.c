/* stg_utf8_seq: valid sequences and every kind of invalid one. */
#include "check.h"
#include "utf8.h"

static size_t seq(const char *s, size_t n) { return stg_utf8_seq((const unsigned char *)s, n); }

TEST(valid) {
  CHECK_EQ_INT(seq("a", 1), 1);
  CHECK_EQ_INT(seq("\0", 1), 1);
  CHECK_EQ_INT(seq("\xC3\xA9", 2), 2);         /* é */
  CHECK_EQ_INT(seq("\xE2\x82\xAC", 3), 3);     /* € */
  CHECK_EQ_INT(seq("\xF0\x9F\x98\x80", 4), 4); /* 😀 */
  CHECK_EQ_INT(seq("\xF4\x8F\xBF\xBF", 4), 4); /* U+10FFFF */
}

TEST(invalid) {
  CHECK_EQ_INT(seq("\x80", 1), 0);             /* a lone continuation */
  CHECK_EQ_INT(seq("\xC0\xAF", 2), 0);         /* overlong */
  CHECK_EQ_INT(seq("\xE0\x80\xAF", 3), 0);     /* overlong */
  CHECK_EQ_INT(seq("\xED\xA0\x80", 3), 0);     /* a surrogate */
  CHECK_EQ_INT(seq("\xF4\x90\x80\x80", 4), 0); /* past U+10FFFF */
  CHECK_EQ_INT(seq("\xF5\x80\x80\x80", 4), 0);
  CHECK_EQ_INT(seq("\xE2\x82", 2), 0);         /* cut short */
  CHECK_EQ_INT(seq("\xE2\x28\xA1", 3), 0);     /* a bad second byte */
  CHECK_EQ_INT(seq("\xF0\x9F\x98\x28", 4), 0); /* a bad last byte */
}

int main(void) {
  RUN(valid);
  RUN(invalid);
  return CHECK_DONE();
}
