/* Control requests: every form, every refusal. */
#include <string.h>

#include "check.h"
#include "ctlproto.h"

static int parse(const char *s, stg_ctl_request_t *r, const char **code) {
  char err[400];
  *code = NULL;
  return stg_ctlproto_parse(s, strlen(s), r, code, err, sizeof err);
}

TEST(good_requests) {
  stg_ctl_request_t r;
  const char *code;
  CHECK(parse("{\"cmd\":\"status\"}", &r, &code) == 0 && r.cmd == STG_CTL_STATUS);
  CHECK(parse("{\"cmd\":\"stop\"}", &r, &code) == 0 && r.cmd == STG_CTL_STOP);
  CHECK(parse("{\"cmd\":\"restart\"}", &r, &code) == 0 && r.cmd == STG_CTL_RESTART &&
        r.component[0] == '\0');
  CHECK(parse("{\"cmd\":\"restart\",\"component\":\"all\"}", &r, &code) == 0 &&
        r.component[0] == '\0');
  CHECK(parse("{\"cmd\":\"restart\",\"component\":\"server\"}", &r, &code) == 0);
  CHECK_STR(r.component, "server");
  CHECK(parse("{\"cmd\":\"wait\",\"timeout_ms\":5}", &r, &code) == 0 && r.timeout_ms == 5);
  CHECK(parse("{\"cmd\":\"wait\"}", &r, &code) == 0 && r.timeout_ms == 60000);
  CHECK(parse("{\"cmd\":\"logs\"}", &r, &code) == 0 && r.tail == 100 && !r.follow &&
        r.n_components == 0);
  CHECK(parse("{\"cmd\":\"logs\",\"tail\":0,\"follow\":true,\"components\":[\"server\","
              "\"supervisor\"]}", &r, &code) == 0);
  CHECK(r.tail == 0 && r.follow && r.n_components == 2);
  CHECK_STR(r.components[1], "supervisor");
}

TEST(refusals) {
  stg_ctl_request_t r;
  const char *code;
  const struct {
    const char *req, *code;
  } bad[] = {
      {"", "bad_request"},
      {"{", "bad_request"},
      {"[]", "bad_request"},
      {"\"status\"", "bad_request"},
      {"{}", "bad_request"},
      {"{\"cmd\":1}", "bad_request"},
      {"{\"cmd\":\"explode\"}", "bad_request"},
      {"{\"cmd\":\"status\",\"cmd\":\"stop\"}", "bad_request"},
      {"{\"cmd\":\"restart\",\"component\":3}", "bad_request"},
      {"{\"cmd\":\"restart\",\"component\":\"supervisor\"}", "unknown_component"},
      {"{\"cmd\":\"restart\",\"component\":\"nope\"}", "unknown_component"},
      {"{\"cmd\":\"wait\",\"timeout_ms\":\"1s\"}", "bad_request"},
      {"{\"cmd\":\"logs\",\"tail\":-1}", "bad_request"},
      {"{\"cmd\":\"logs\",\"tail\":\"x\"}", "bad_request"},
      {"{\"cmd\":\"logs\",\"follow\":1}", "bad_request"},
      {"{\"cmd\":\"logs\",\"components\":\"server\"}", "bad_request"},
      {"{\"cmd\":\"logs\",\"components\":[1]}", "unknown_component"},
      {"{\"cmd\":\"logs\",\"components\":[\"nope\"]}", "unknown_component"},
      {"{\"cmd\":\"logs\",\"components\":[\"server\",\"server\",\"server\",\"server\","
       "\"server\",\"server\",\"server\",\"server\",\"server\"]}", "bad_request"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = parse(bad[i].req, &r, &code);
    CHECK(rc != 0);
    if (rc == 0 || code == NULL || strcmp(code, bad[i].code) != 0)
      fprintf(stderr, "  for %s: got %s\n", bad[i].req, code ? code : "(none)");
  }
}

TEST(line_cap) {
  static char big[STG_CTL_MAX_LINE + 2];
  memset(big, ' ', sizeof big);
  stg_ctl_request_t r;
  const char *code;
  char err[200];
  CHECK(stg_ctlproto_parse(big, STG_CTL_MAX_LINE + 1, &r, &code, err, sizeof err) != 0);
  CHECK_STR(code, "too_long");
}

int main(void) {
  RUN(good_requests);
  RUN(refusals);
  RUN(line_cap);
  return CHECK_DONE();
}
