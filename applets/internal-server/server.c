/* internal-server (stigmer-server): the stack's API server.
 *
 * It serves the API of docs/api.md (api.c) from the store at
 * $STIGMER_HOME/data/stigmer.db (lib/store). It listens on [server]
 * listen, opens the store, tells the supervisor it is ready (READY=1), and
 * on SIGTERM/SIGINT (or the supervisor's death, see lib/pdeath.h) stops
 * accepting, answers long polls, lets requests in flight finish, and
 * exits 0.
 *
 * Exit status: 0 stopped by a signal, 1 cannot run (address in use,
 * parent gone), 2 usage or configuration error.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "api.h"
#include "applets.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "notify.h"
#include "pdeath.h"
#include "store.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

static const char usage[] =
    "Usage: stigmer-server [--home DIR] [--listen HOST:PORT] [--log-level LEVEL]\n"
    "       stigmer internal-server [OPTIONS]\n"
    "\n"
    "The Stigmer stack's API server (HTTP/1.1 + JSON). Normally started by the\n"
    "supervisor (`stigmer daemon start`), which passes STIGMER_HOME and\n"
    "NOTIFY_SOCKET; it can also run on its own.\n"
    "\n"
    "It serves the API of docs/api.md from $STIGMER_HOME/data/stigmer.db.\n"
    "\n"
    "  --home DIR            STIGMER_HOME (default ~/.stigmer)\n"
    "  --listen HOST:PORT    address to listen on ([server] listen, default\n"
    "                        127.0.0.1:7234)\n"
    "  --log-level LEVEL     error, warn, info or debug\n"
    "  -h, --help            this text\n"
    "\n"
    "SIGTERM or SIGINT: stop accepting, finish requests in flight, exit 0.\n"
    "Exit status: 0 stopped, 1 cannot run (e.g. address in use), 2 usage or\n"
    "configuration error.\n";

typedef struct {
  uv_loop_t loop;
  uv_signal_t sigterm;
  uv_signal_t sigint;
  uv_timer_t stop_timer;    /* bounds a graceful stop */
  stg_http_server_t http;
  stg_pdeath_t pdeath;
  api_t api;
  stg_store_t *store;
  bool api_open;            /* api_init ran; api_close is due */
  uint64_t stop_ms;
  bool stopping;
  char addr[128];           /* where it listens */
} server_t;

static void on_api_closed(api_t *api) {
  server_t *s = container_of(api, server_t, api);
  stg_store_close(s->store);
  s->store = NULL;
}

static void close_rest(server_t *s) {
  if (s->api_open) {
    s->api_open = false;
    api_close(&s->api, on_api_closed);
  }
  uv_close((uv_handle_t *)&s->sigterm, NULL);
  uv_close((uv_handle_t *)&s->sigint, NULL);
  uv_close((uv_handle_t *)&s->stop_timer, NULL);
  stg_pdeath_close(&s->pdeath);
}

static void on_http_closed(stg_http_server_t *http) {
  server_t *s = container_of(http, server_t, http);
  if (s->stopping)
    stg_info("stopped");
  close_rest(s);
}

static void on_stop_timeout(uv_timer_t *t) {
  server_t *s = container_of(t, server_t, stop_timer);
  stg_warn("requests still in flight after the stop timeout; closing their connections");
  stg_http_server_abort(&s->http);
}

static void on_signal(uv_signal_t *sig, int signum) {
  server_t *s = sig->data;
  if (s->stopping) {
    stg_warn("%s again: closing every connection now", signum == SIGINT ? "SIGINT" : "SIGTERM");
    stg_http_server_abort(&s->http);
    return;
  }
  s->stopping = true;
  if (signum == SIGTERM && stg_pdeath_parent_gone(&s->pdeath))
    stg_info("the supervisor (pid %ld) is gone; stopping", (long)s->pdeath.parent);
  else
    stg_info("%s: stopping; finishing requests in flight",
             signum == SIGINT ? "SIGINT" : "SIGTERM");
  stg_notify("STOPPING=1");
  uv_timer_start(&s->stop_timer, on_stop_timeout, s->stop_ms, 0);
  /* answer the long polls now: they would hold the stop until they end */
  if (s->api_open) {
    s->api_open = false;
    api_close(&s->api, on_api_closed);
  }
  stg_http_server_shutdown(&s->http, on_http_closed);
}

/* Stop within the supervisor's stop timeout, before its SIGKILL. */
static uint64_t own_stop_bound(uint64_t supervisor_ms) {
  if (supervisor_ms == 0)
    return 5000;
  return supervisor_ms > 1000 ? supervisor_ms - 500 : supervisor_ms / 2 + 1;
}

static int serve(const stg_config_t *cfg) {
  server_t s;
  int status = 1;
  memset(&s, 0, sizeof s);
  s.stop_ms = own_stop_bound(cfg->component[STG_COMP_SERVER].stop_timeout_ms);
  int rc = uv_loop_init(&s.loop);
  if (rc != 0) {
    stg_error("cannot start the event loop: %s", uv_strerror(rc));
    return 1;
  }
  rc = stg_pdeath_init(&s.loop, &s.pdeath);
  if (rc == UV_ESRCH) {
    stg_error("the supervisor that started this server is already gone; exiting");
    goto out_loop;
  }
  if (rc != 0) {
    stg_error("watch the supervisor: %s", uv_strerror(rc));
    goto out_loop;
  }
  uv_signal_init(&s.loop, &s.sigterm);
  uv_signal_init(&s.loop, &s.sigint);
  uv_timer_init(&s.loop, &s.stop_timer);
  s.sigterm.data = s.sigint.data = &s;
  uv_signal_start(&s.sigterm, on_signal, SIGTERM);
  uv_signal_start(&s.sigint, on_signal, SIGINT);

  api_init(&s.api, &s.loop, cfg->server.lease_ms);
  s.api_open = true;
  unsigned n_routes;
  const stg_http_route_t *routes = api_routes(&s.api, &n_routes);
  stg_http_options_t ho = {
      .max_body = 0,
      .max_header_bytes = 0,
      .idle_timeout_ms = cfg->server.idle_timeout_ms,
      .max_connections = (unsigned)cfg->server.max_connections,
      .routes = routes,
      .n_routes = n_routes,
  };
  rc = stg_http_server_init(&s.loop, &s.http, &ho);
  if (rc != 0) {
    stg_error("start the HTTP server: %s", uv_strerror(rc));
    close_rest(&s);
    goto out_run;
  }
  rc = stg_http_server_listen(&s.http, cfg->server.listen);
  if (rc != 0) {
    stg_error("listen %s: %s", cfg->server.listen, uv_strerror(rc));
    stg_http_server_shutdown(&s.http, on_http_closed);
    goto out_run;
  }
  if (stg_http_server_address(&s.http, s.addr, sizeof s.addr) != 0)
    snprintf(s.addr, sizeof s.addr, "%s", cfg->server.listen);
  stg_info("listening on %s", s.addr);
  char dbpath[4096], err[4608];
  if (stg_config_path(cfg, "data/stigmer.db", dbpath, sizeof dbpath) == NULL) {
    stg_error("open the store: the path under %s is too long", cfg->home);
    stg_http_server_shutdown(&s.http, on_http_closed);
    status = 1;
    goto out_run;
  }
  rc = stg_store_open(dbpath, &s.store, err, sizeof err);
  if (rc != 0) {
    stg_error("%s", err);
    stg_http_server_shutdown(&s.http, on_http_closed);
    goto out_run;
  }
  api_set_store(&s.api, s.store);
  stg_info("store %s open (schema version %d)", dbpath, stg_store_schema_version());
  char msg[160];
  snprintf(msg, sizeof msg, "STATUS=listening on %s", s.addr);
  int nrc = stg_notify(msg);
  if (nrc == 0)
    nrc = stg_notify("READY=1");
  if (nrc != 0)
    stg_warn("tell the supervisor we are ready ($NOTIFY_SOCKET): %s", uv_strerror(nrc));
  status = 0;

out_run:
  uv_run(&s.loop, UV_RUN_DEFAULT);
out_loop:
  if (uv_loop_close(&s.loop) != 0)
    stg_warn("the event loop closed with handles still open");
  return status;
}

int internal_server_main(int argc, char **argv) {
  static const struct option opts[] = {
      {"home", required_argument, NULL, 'H'},
      {"listen", required_argument, NULL, 'l'},
      {"log-level", required_argument, NULL, 'L'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *name = "stigmer-server";
  const char *home = NULL, *listen = NULL, *level = NULL;
  opterr = 0;
  optind = 1;
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'H':
      home = optarg;
      break;
    case 'l':
      listen = optarg;
      break;
    case 'L':
      level = optarg;
      break;
    case 'h':
      fputs(usage, stdout);
      return 0;
    default:
      fprintf(stderr, "%s: unknown option or missing value '%s'\n"
              "Try '%s --help' for more information.\n", name, argv[optind - 1], name);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "%s: unexpected argument '%s'\n"
            "Try '%s --help' for more information.\n", name, argv[optind], name);
    return 2;
  }
  stg_log_set_name(name);
  stg_config_t cfg;
  char err[4608];
  if (stg_config_init(&cfg, home) != 0) {
    fprintf(stderr, "%s: cannot find a home directory: set STIGMER_HOME or use --home\n", name);
    return 2;
  }
  int rc = stg_config_load(&cfg, err, sizeof err);
  if (rc == 0 && listen)
    rc = stg_config_set(&cfg, "server.listen", listen, err, sizeof err);
  if (rc == 0 && level)
    rc = stg_config_set(&cfg, "log.level", level, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "%s: %s\n", name, err);
    stg_config_free(&cfg);
    return 2;
  }
  stg_log_set_level(cfg.log.level);
  signal(SIGPIPE, SIG_IGN);
  int status = serve(&cfg);
  stg_config_free(&cfg);
  return status;
}
