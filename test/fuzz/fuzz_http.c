/* libFuzzer target: HTTP request handling of the API server without a
 * listening socket. The input is written into one end of a socketpair
 * whose other end the server adopts (stg__http_server_adopt), so the real
 * parser, limits, dispatch, the API handlers and an in-memory store see
 * it; the responses are read and dropped. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>

#include <uv.h>

#include "api.h"
#include "http-internal.h"
#include "log.h"
#include "store.h"

static stg_store_t *store;
static unsigned runs;

static void drain(int fd) {
  char buf[65536];
  while (read(fd, buf, sizeof buf) > 0) {
  }
}

static void on_api_closed(api_t *api) { (void)api; }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  signal(SIGPIPE, SIG_IGN);
  stg_log_set_sinks(0);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[512];
  /* a fresh in-memory store now and then keeps memory bounded */
  if (store == NULL || ++runs % 256 == 0) {
    stg_store_close(store);
    if (stg_store_open(":memory:", &store, err, sizeof err) != 0)
      abort();
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  api_t api;
  api_init(&api, &loop, 30000);
  api_set_store(&api, store);
  unsigned n_routes;
  const stg_http_route_t *routes = api_routes(&api, &n_routes);
  stg_http_options_t ho = {
      .max_body = 64 * 1024,
      .max_header_bytes = 4096,
      .idle_timeout_ms = 1000,
      .max_connections = 4,
      .routes = routes,
      .n_routes = n_routes,
  };
  stg_http_server_t srv;
  if (stg_http_server_init(&loop, &srv, &ho) != 0)
    abort();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    abort();
  fcntl(sv[1], F_SETFL, O_NONBLOCK);
  if (stg__http_server_adopt(&srv, sv[0]) != 0)
    abort();
  size_t off = 0;
  for (int spins = 0; off < size && spins < 10000; spins++) {
    ssize_t n = write(sv[1], data + off, size - off);
    if (n > 0)
      off += (size_t)n;
    else if (n < 0 && errno != EAGAIN && errno != EINTR)
      break; /* the server closed its end */
    uv_run(&loop, UV_RUN_NOWAIT);
    drain(sv[1]);
  }
  shutdown(sv[1], SHUT_WR);
  for (int spins = 0; srv.conns != NULL && spins < 200; spins++) {
    uv_run(&loop, UV_RUN_NOWAIT);
    drain(sv[1]);
  }
  api_close(&api, on_api_closed);
  stg_http_server_shutdown(&srv, NULL);
  stg_http_server_abort(&srv);
  close(sv[1]);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    abort(); /* a handle left open */
  return 0;
}
