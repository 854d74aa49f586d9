/* Strict duration, size, bool and integer parsing. */
#include <stdint.h>

#include <uv.h>

#include "check.h"
#include "parse.h"

TEST(durations) {
  uint64_t v = 7;
  CHECK(stg_parse_duration("250ms", &v) == 0 && v == 250);
  CHECK(stg_parse_duration("5s", &v) == 0 && v == 5000);
  CHECK(stg_parse_duration("2m", &v) == 0 && v == 120000);
  CHECK(stg_parse_duration("1h", &v) == 0 && v == 3600000);
  CHECK(stg_parse_duration("1m30s", &v) == 0 && v == 90000);
  CHECK(stg_parse_duration("0", &v) == 0 && v == 0);
  CHECK(stg_parse_duration("0s", &v) == 0 && v == 0);
}

TEST(bad_durations) {
  const char *bad[] = {"", "5", "5 s", " 5s", "5s ", "5 parsecs", "5parsecs", "s",
                       "-5s", "1.5s", "5S", "5sec", "5ms5", "ms", "1d", "0x10s"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint64_t v = 42;
    int rc = stg_parse_duration(bad[i], &v);
    CHECK(rc == UV_EINVAL);
    CHECK(v == 42);
  }
  uint64_t v = 42;
  CHECK(stg_parse_duration(NULL, &v) == UV_EINVAL);
  CHECK(stg_parse_duration("99999999999999999999s", &v) == UV_ERANGE);
  CHECK(stg_parse_duration("18446744073709551615h", &v) == UV_ERANGE);
  CHECK(v == 42);
}

TEST(sizes) {
  uint64_t v;
  CHECK(stg_parse_size("512KiB", &v) == 0 && v == 512 * 1024);
  CHECK(stg_parse_size("10MiB", &v) == 0 && v == 10 * 1024 * 1024);
  CHECK(stg_parse_size("1GiB", &v) == 0 && v == 1ull << 30);
  CHECK(stg_parse_size("100B", &v) == 0 && v == 100);
  CHECK(stg_parse_size("0", &v) == 0 && v == 0);
}

TEST(bad_sizes) {
  const char *bad[] = {"", "10", "10 MiB", "10mib", "10MB", "10M", "MiB", "-1KiB",
                       "1.5MiB", "10MiBs", "KiB10"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint64_t v = 42;
    CHECK(stg_parse_size(bad[i], &v) == UV_EINVAL);
    CHECK(v == 42);
  }
  uint64_t v;
  CHECK(stg_parse_size("99999999999TiB", &v) == UV_ERANGE);
}

TEST(bools_and_ints) {
  bool b;
  CHECK(stg_parse_bool("yes", &b) == 0 && b);
  CHECK(stg_parse_bool("Off", &b) == 0 && !b);
  CHECK(stg_parse_bool("1", &b) == 0 && b);
  CHECK(stg_parse_bool("y", &b) == UV_EINVAL);
  CHECK(stg_parse_bool("", &b) == UV_EINVAL);
  int64_t i;
  CHECK(stg_parse_int("10", 0, 100, &i) == 0 && i == 10);
  CHECK(stg_parse_int("-3", -5, 5, &i) == 0 && i == -3);
  CHECK(stg_parse_int("101", 0, 100, &i) == UV_ERANGE);
  CHECK(stg_parse_int("1x", 0, 100, &i) == UV_EINVAL);
  CHECK(stg_parse_int("", 0, 100, &i) == UV_EINVAL);
  CHECK(stg_parse_int("-", 0, 100, &i) == UV_EINVAL);
}

TEST(format_round_trip) {
  char buf[64];
  uint64_t ms[] = {0, 1, 250, 1000, 90000, 3600000, 3723004};
  for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
    uint64_t back = 1;
    CHECK(stg_parse_duration(stg_format_duration(ms[i], buf, sizeof buf), &back) == 0);
    CHECK(back == ms[i]);
  }
  CHECK_STR(stg_format_duration(90000, buf, sizeof buf), "1m30s");
  CHECK_STR(stg_format_size(10 << 20, buf, sizeof buf), "10MiB");
  CHECK_STR(stg_format_size(1500, buf, sizeof buf), "1500B");
}

int main(void) {
  RUN(durations);
  RUN(bad_durations);
  RUN(sizes);
  RUN(bad_sizes);
  RUN(bools_and_ints);
  RUN(format_round_trip);
  return CHECK_DONE();
}
