/* The HTTP API of internal-server (docs/api.md) on lib/http and lib/store.
 *
 * Long polls are event-driven: a request that waits (events?wait=,
 * tasks/claim with a wait, tasks/{id}?wait=) is kept on a list and
 * answered when what it waits for is recorded, or by its own deadline
 * timer. Leases: one timer, armed for the earliest lease expiry only while
 * some task is leased; when it fires, lapsed tasks go back to pending and
 * waiting claims are woken.
 */
#ifndef STG_SERVER_API_H
#define STG_SERVER_API_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "http.h"
#include "store.h"

#define API_N_ROUTES 12
#define API_MAX_WAIT_MS 60000

typedef struct api_waiter_s api_waiter_t;

typedef struct api_s {
  uv_loop_t *loop;
  stg_store_t *store;        /* NULL until open: /readyz and /v1 answer 503 */
  uint64_t lease_ms;         /* [server] lease */
  uv_timer_t lease_timer;    /* the earliest lease expiry, armed while leases exist */
  api_waiter_t *waiters;     /* doubly linked: requests answered later */
  unsigned n_waiters;
  bool closing;
  stg_http_route_t routes[API_N_ROUTES]; /* data points back here */
  void (*closed_cb)(struct api_s *api);
} api_t;

/* Initialises api on loop (its lease timer). lease_ms 0 means 30 s. */
void api_init(api_t *api, uv_loop_t *loop, uint64_t lease_ms);

/* Hands the open store to the API (borrowed; closed by the caller after
 * api_close's callback). Arms the lease timer for leases left from before
 * a restart. */
void api_set_store(api_t *api, stg_store_t *store);

/* Answers every waiting request (503, the server is stopping) and closes
 * the timer; cb runs once everything is closed. */
void api_close(api_t *api, void (*cb)(api_t *api));

/* For lib/http: the route table and its size. */
const stg_http_route_t *api_routes(const api_t *api, unsigned *n);

#endif
