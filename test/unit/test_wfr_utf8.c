/* The workflow runner's UTF-8 cleaning of step output (stg__wfr_utf8):
 * valid text unchanged, anything else (invalid bytes, overlongs,
 * surrogates, truncated sequences, NUL) replaced by U+FFFD, so the result
 * can go into JSON. */
#include "check.h"

#include "../../applets/internal-workflow-runner/wfr.h"

#define FFFD "\xEF\xBF\xBD"

static void expect(const char *in, size_t len, const char *want) {
  size_t n = 0;
  char *out = stg__wfr_utf8(in, len, &n);
  CHECK_STR(out, want);
  CHECK_EQ_INT(n, strlen(want));
  free(out);
}

TEST(valid_unchanged) {
  expect("", 0, "");
  expect("hello", 5, "hello");
  expect("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x90\x9D", 14, "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x90\x9D");
  expect("\xEF\xBF\xBF", 3, "\xEF\xBF\xBF");
  expect("\xF4\x8F\xBF\xBF", 4, "\xF4\x8F\xBF\xBF"); /* U+10FFFF */
}

TEST(invalid_replaced) {
  expect("a\xFF" "b", 3, "a" FFFD "b");
  expect("nul\0byte", 8, "nul" FFFD "byte");
  expect("\xC0\xAF", 2, FFFD FFFD);             /* overlong '/' */
  expect("\xE0\x80\xAF", 3, FFFD FFFD FFFD);    /* overlong */
  expect("\xED\xA0\x80", 3, FFFD FFFD FFFD);    /* a surrogate */
  expect("\xF4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD); /* over U+10FFFF */
  expect("ab\xE2\x82", 4, "ab" FFFD FFFD);      /* cut short at the end */
  expect("\x80", 1, FFFD);                      /* a lone continuation byte */
}

TEST(result_is_json_string) {
  const char in[] = "x\xFE\xFFy\0z";
  char *out = stg__wfr_utf8(in, sizeof in - 1, NULL);
  json_t *j = json_string(out); /* jansson refuses invalid UTF-8 */
  CHECK(j != NULL);
  json_decref(j);
  free(out);
}

int main(void) {
  RUN(valid_unchanged);
  RUN(invalid_replaced);
  RUN(result_is_json_string);
  return CHECK_DONE();
}
