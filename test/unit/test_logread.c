/* The log record format and reading it back: timestamps, lines, the
 * last N records across rotated files, --since, and the stable merge. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "check.h"
#include "logread.h"

static char dir[64];

static void write_file(const char *name, const char *text) {
  char p[256];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "w");
  fputs(text, f);
  fclose(f);
}

static char *text_of(const stg_logrec_t *r) {
  static char buf[4][256];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%.*s", (int)r->len, r->text);
  return buf[k];
}

TEST(timestamps) {
  char ts[STG_LOG_TS_LEN];
  CHECK_STR(stg_log_format_ts(1795239551082088ull, ts), "2026-11-21T05:39:11.082088Z");
  uint64_t us = 0;
  CHECK_EQ_INT(stg_log_parse_ts(ts, strlen(ts), &us), 0);
  CHECK_EQ_INT(us, 1795239551082088ull);
  CHECK_EQ_INT(stg_log_parse_ts("1970-01-01T00:00:00.000000Z", 27, &us), 0);
  CHECK_EQ_INT(us, 0);
  CHECK_EQ_INT(stg_log_parse_ts("2026-11-21T05:39:11Z", 20, &us), 0);
  CHECK_EQ_INT(us, 1795239551000000ull);
  /* Leap year: 2024-02-29. */
  CHECK_EQ_INT(stg_log_parse_ts("2024-02-29T00:00:00.5Z", 22, &us), 0);
  CHECK_EQ_INT(us, 1709164800500000ull);
  CHECK(stg_log_parse_ts("2026-11-21 05:39:11Z", 20, &us) != 0);
  CHECK(stg_log_parse_ts("2026-11-21T05:39:11", 19, &us) != 0);
  CHECK(stg_log_parse_ts("2026-13-21T05:39:11Z", 20, &us) != 0);
  CHECK(stg_log_parse_ts("garbage", 7, &us) != 0);

  uint64_t now = 1795239551000000ull;
  CHECK_EQ_INT(stg_log_parse_since("10m", now, &us), 0);
  CHECK_EQ_INT(us, now - 600000000ull);
  CHECK_EQ_INT(stg_log_parse_since("2026-11-21 05:39", now, &us), 0);
  CHECK_EQ_INT(us, 1795239540000000ull);
  CHECK_EQ_INT(stg_log_parse_since("2026-11-21T06:39:11+01:00", now, &us), 0);
  CHECK_EQ_INT(us, 1795239551000000ull);
  CHECK_EQ_INT(stg_log_parse_since("2026-11-21", now, &us), 0);
  CHECK_EQ_INT(us, 1795219200000000ull);
  CHECK(stg_log_parse_since("yesterday", now, &us) != 0);
  CHECK(stg_log_parse_since("2026-11-21T05", now, &us) != 0);
}

TEST(parse_line) {
  stg_logrec_t r;
  const char *l = "2026-11-21T05:39:11.082088Z 124 out listening on 127.0.0.1:7234";
  REQUIRE(stg_logread_parse_line(l, strlen(l), &r) == 0);
  CHECK_EQ_INT(r.us, 1795239551082088ull);
  CHECK_EQ_INT(r.pid, 124);
  CHECK_EQ_INT(r.stream, STG_LOGSTREAM_OUT);
  CHECK(!r.cont);
  CHECK_STR(text_of(&r), "listening on 127.0.0.1:7234");

  l = "2026-11-21T05:39:11.082088Z 7 err+ a  b ";
  REQUIRE(stg_logread_parse_line(l, strlen(l), &r) == 0);
  CHECK_EQ_INT(r.stream, STG_LOGSTREAM_ERR);
  CHECK(r.cont);
  CHECK_STR(text_of(&r), "a  b ");

  /* An empty line: the text after the third space is empty. */
  l = "2026-11-21T05:39:11.082088Z 7 out ";
  REQUIRE(stg_logread_parse_line(l, strlen(l), &r) == 0);
  CHECK_EQ_INT(r.len, 0);

  /* A stg_log line of supervisor.log. */
  l = "2026-11-21T05:39:12.000001Z info  supervisor: started server pid 124";
  REQUIRE(stg_logread_parse_line(l, strlen(l), &r) == 0);
  CHECK_EQ_INT(r.us, 1795239552000001ull);
  CHECK_EQ_INT(r.stream, STG_LOGSTREAM_SYS);
  CHECK_EQ_INT(r.pid, 0);
  CHECK_STR(text_of(&r), "info  supervisor: started server pid 124");

  l = "no timestamp here";
  CHECK(stg_logread_parse_line(l, strlen(l), &r) != 0);

  CHECK_STR(stg_log_stream_name(STG_LOGSTREAM_OUT, true), "out+");
  CHECK_STR(stg_log_stream_name(STG_LOGSTREAM_SYS, false), "sys");
}

#define T(s) "2026-11-21T05:00:" s "Z"

TEST(read_rotated) {
  write_file("server.log.3", T("00.000001") " 1 out a1\n" T("00.000002") " 1 out a2\n");
  write_file("server.log.2", T("01.000001") " 1 out b1\n" T("01.000002") " 1 out+ b2\n");
  write_file("server.log.1", T("02.000001") " 1 out b3\n"
                             "a continuation without a time\n");
  write_file("server.log", T("03.000001") " 2 err c1\n" T("03.000002") " 0 sys c2\n"
                           T("03.000003") " 2 out no newline at the end");
  /* A .5 without a .4 is not part of the series. */
  write_file("server.log.5", T("00.000000") " 1 out stray\n");

  stg_logread_options_t o = {dir, "server", -1, 0, 0};
  stg_logread_list_t l;
  REQUIRE(stg_logread_component(&o, &l) == 0);
  const char *want[] = {"a1", "a2", "b1", "b2", "b3", "a continuation without a time",
                        "c1", "c2", "no newline at the end"};
  CHECK_EQ_INT(l.n, 9);
  for (size_t i = 0; i < l.n && i < 9; i++) {
    CHECK_STR(text_of(&l.v[i]), want[i]);
    CHECK_STR(l.v[i].component, "server");
  }
  if (l.n == 9) {
    CHECK(l.v[3].cont);
    CHECK_EQ_INT(l.v[5].us, l.v[4].us); /* the time of the record before */
    CHECK_EQ_INT(l.v[6].stream, STG_LOGSTREAM_ERR);
    CHECK_EQ_INT(l.v[6].pid, 2);
  }
  stg_logread_list_free(&l);

  /* The last 4. */
  o.tail = 4;
  REQUIRE(stg_logread_component(&o, &l) == 0);
  CHECK_EQ_INT(l.n, 4);
  if (l.n == 4) {
    CHECK_STR(text_of(&l.v[0]), "a continuation without a time");
    CHECK_STR(text_of(&l.v[3]), "no newline at the end");
  }
  stg_logread_list_free(&l);

  /* Since the start of second 01, the last 3 of what is left. */
  o.tail = -1;
  o.since_us = 1795237201000002ull; /* 2026-11-21T05:00:01.000002Z */
  REQUIRE(stg_logread_component(&o, &l) == 0);
  CHECK_EQ_INT(l.n, 6);
  if (l.n == 6)
    CHECK_STR(text_of(&l.v[0]), "b2");
  stg_logread_list_free(&l);

  /* tail 0 keeps nothing; a missing component is an empty list. */
  o.since_us = 0;
  o.tail = 0;
  REQUIRE(stg_logread_component(&o, &l) == 0);
  CHECK_EQ_INT(l.n, 0);
  stg_logread_list_free(&l);
  o.tail = -1;
  o.component = "nothing";
  REQUIRE(stg_logread_component(&o, &l) == 0);
  CHECK_EQ_INT(l.n, 0);
  stg_logread_list_free(&l);

  /* max_records is a hard cap: the oldest go. */
  o.component = "server";
  o.max_records = 2;
  REQUIRE(stg_logread_component(&o, &l) == 0);
  CHECK_EQ_INT(l.n, 2);
  if (l.n == 2)
    CHECK_STR(text_of(&l.v[1]), "no newline at the end");
  stg_logread_list_free(&l);
}

TEST(merge_stable) {
  write_file("a.log", T("00.000001") " 1 out a1\n" T("00.000003") " 1 out a3\n"
                      T("00.000003") " 1 out a3b\n" T("00.000005") " 1 out a5\n");
  write_file("b.log", T("00.000002") " 2 out b2\n" T("00.000003") " 2 out b3\n"
                      T("00.000004") " 2 out b4\n");
  write_file("supervisor.log", T("00.000003") " info  supervisor: s3\n");
  stg_logread_list_t lists[3], m;
  const char *names[] = {"a", "b", "supervisor"};
  for (int i = 0; i < 3; i++) {
    stg_logread_options_t o = {dir, names[i], -1, 0, 0};
    REQUIRE(stg_logread_component(&o, &lists[i]) == 0);
  }
  REQUIRE(stg_logread_merge(lists, 3, &m) == 0);
  const char *want[] = {"a1", "b2", "a3", "a3b", "b3", "info  supervisor: s3", "b4", "a5"};
  const char *comp[] = {"a", "b", "a", "a", "b", "supervisor", "b", "a"};
  CHECK_EQ_INT(m.n, 8);
  for (size_t i = 0; i < m.n && i < 8; i++) {
    CHECK_STR(text_of(&m.v[i]), want[i]);
    CHECK_STR(m.v[i].component, comp[i]);
  }
  stg_logread_list_free(&m);
  for (int i = 0; i < 3; i++)
    stg_logread_list_free(&lists[i]);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/stg-logread.XXXXXX");
  if (mkdtemp(dir) == NULL)
    return 1;
  RUN(timestamps);
  RUN(parse_line);
  RUN(read_rotated);
  RUN(merge_stable);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    return 1;
  return CHECK_DONE();
}
