/* Build and run-time version information. */
#ifndef STG_VERSION_H
#define STG_VERSION_H

#include <stdbool.h>

const char *stg_version(void);      /* "1.2.3" or "0.0.0-dev+gabc" */
const char *stg_version_commit(void);
const char *stg_version_build_type(void);
bool stg_version_is_release(void);  /* a plain release version */
const char *stg_version_os(void);   /* "linux", "darwin" */
const char *stg_version_arch(void); /* "amd64", "arm64" */

/* name -> version string of every library, as linked and running. */
typedef struct {
  const char *name;
  char version[96];
} stg_library_version_t;

enum { STG_VERSION_LIBRARIES = 7 };
void stg_version_libraries(stg_library_version_t out[STG_VERSION_LIBRARIES]);

#endif
