/* lib/http entry points for tests and fuzzing only. */
#ifndef STG_HTTP_INTERNAL_H
#define STG_HTTP_INTERNAL_H

#include "http.h"

/* Serves an already-connected stream socket (one end of a socketpair, say)
 * as if the listener had accepted it: the same parser, limits, dispatch
 * and responses, without a listening socket. The server owns fd from
 * then on, even on error. Returns 0 or a negative error. */
int stg__http_server_adopt(stg_http_server_t *srv, uv_os_sock_t fd);

#endif
