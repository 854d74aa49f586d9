/* A small test harness: CHECK records a failure and goes on, REQUIRE
 * stops the test. Each test file defines its tests with TEST(name) and
 * lists them in main() with RUN(name); the last line printed is
 * "N passed, N failed", and the exit code is non-zero on any failure. */
#ifndef STG_CHECK_H
#define STG_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failures_;  /* in the current test */
static int check_passed_, check_failed_;

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
      check_failures_++;                                                         \
    }                                                                            \
  } while (0)

#define REQUIRE(cond)                                                            \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
      check_failures_++;                                                         \
      return;                                                                    \
    }                                                                            \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                       \
  do {                                                                           \
    long long a_ = (long long)(a), b_ = (long long)(b);                          \
    if (a_ != b_) {                                                              \
      fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__, \
              __LINE__, #a, #b, a_, b_);                                         \
      check_failures_++;                                                         \
    }                                                                            \
  } while (0)

#define CHECK_STR(a, b)                                                          \
  do {                                                                           \
    const char *a_ = (a), *b_ = (b);                                             \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                       \
      fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n",      \
              __FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
      check_failures_++;                                                         \
    }                                                                            \
  } while (0)

#define CHECK_CONTAINS(hay, needle)                                              \
  do {                                                                           \
    const char *h_ = (hay), *n_ = (needle);                                      \
    if (h_ == NULL || strstr(h_, n_) == NULL) {                                  \
      fprintf(stderr, "%s:%d: CHECK failed: \"%s\" contains \"%s\"\n", __FILE__, \
              __LINE__, h_ ? h_ : "(null)", n_);                                 \
      check_failures_++;                                                         \
    }                                                                            \
  } while (0)

#define TEST(name) static void test_##name(void)

#define RUN(name)                                                                \
  do {                                                                           \
    check_failures_ = 0;                                                         \
    test_##name();                                                               \
    if (check_failures_) {                                                       \
      check_failed_++;                                                           \
      fprintf(stderr, "FAIL %s\n", #name);                                       \
    } else {                                                                     \
      check_passed_++;                                                           \
      fprintf(stderr, "ok   %s\n", #name);                                       \
    }                                                                            \
  } while (0)

#define CHECK_DONE()                                                             \
  (printf("%d passed, %d failed\n", check_passed_, check_failed_),               \
   check_failed_ ? 1 : 0)

#endif
