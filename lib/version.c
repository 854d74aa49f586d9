#include "version.h"

#include <stdio.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <llhttp.h>
#include <mbedtls/version.h>
#include <sqlite3.h>
#include <uv.h>

#include "stg_build_info.h"

const char *stg_version(void) { return STG_BUILD_VERSION; }
const char *stg_version_commit(void) { return STG_BUILD_COMMIT; }
const char *stg_version_build_type(void) { return STG_BUILD_TYPE; }
bool stg_version_is_release(void) { return STG_BUILD_IS_RELEASE != 0; }

const char *stg_version_os(void) {
#if defined(__linux__)
  return "linux";
#elif defined(__APPLE__)
  return "darwin";
#elif defined(__FreeBSD__)
  return "freebsd";
#else
  return "unknown";
#endif
}

const char *stg_version_arch(void) {
#if defined(__x86_64__)
  return "amd64";
#elif defined(__aarch64__)
  return "arm64";
#elif defined(__i386__)
  return "386";
#elif defined(__arm__)
  return "arm";
#else
  return "unknown";
#endif
}

void stg_version_libraries(stg_library_version_t out[STG_VERSION_LIBRARIES]) {
  memset(out, 0, sizeof(stg_library_version_t) * STG_VERSION_LIBRARIES);
  out[0].name = "libuv";
  snprintf(out[0].version, sizeof out[0].version, "%s", uv_version_string());
  const curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
  out[1].name = "libcurl";
  snprintf(out[1].version, sizeof out[1].version, "%s (%s)", cv->version,
           cv->ssl_version ? cv->ssl_version : "no TLS");
  out[2].name = "mbedtls";
  char mv[18];
  mbedtls_version_get_string(mv);
  snprintf(out[2].version, sizeof out[2].version, "%s", mv);
  out[3].name = "inih";
  /* inih has no run-time version call; this is the version pkg-config
   * reported for the shared library it links against. */
  snprintf(out[3].version, sizeof out[3].version, "%s", STG_INIH_VERSION);
  out[4].name = "jansson";
  snprintf(out[4].version, sizeof out[4].version, "%s", jansson_version_str());
  out[5].name = "sqlite";
  snprintf(out[5].version, sizeof out[5].version, "%s", sqlite3_libversion());
  out[6].name = "llhttp";
  snprintf(out[6].version, sizeof out[6].version, "%d.%d.%d", LLHTTP_VERSION_MAJOR,
           LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
}
