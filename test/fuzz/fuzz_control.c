/* libFuzzer target: the control protocol's framing and request parser.
 * The input is a byte stream as a client would send it; it is cut into
 * lines the way the supervisor cuts them and each line is parsed. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ctlproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *p = (const char *)data;
  size_t left = size;
  while (left > 0) {
    const char *nl = memchr(p, '\n', left);
    size_t len = nl ? (size_t)(nl - p) : left;
    stg_ctl_request_t r;
    const char *code = NULL;
    char err[400];
    int rc = stg_ctlproto_parse(p, len, &r, &code, err, sizeof err);
    if (rc != 0 && code == NULL)
      __builtin_trap(); /* every refusal names its code */
    if (rc == 0 && r.n_components > STG_CTL_MAX_COMPONENTS)
      __builtin_trap();
    if (nl == NULL)
      break;
    p = nl + 1;
    left -= len + 1;
  }
  return 0;
}
