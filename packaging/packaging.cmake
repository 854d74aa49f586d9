# Packaging parts of the build, included at the end of CMakeLists.txt.
#
# 1. The service templates (packaging/systemd, packaging/launchd) are
#    compiled into the applets as stg_units.h, so that
#    `stigmer daemon install-service` writes exactly the files in packaging/.
# 2. STIGMER_STATIC_DEPS (release builds, packaging/release.sh): link
#    libuv, inih, jansson and SQLite from their static archives where the
#    system has them (mbedTLS and curl are always static).

set(_units_src ${CMAKE_SOURCE_DIR}/packaging/systemd/stigmer.service
  ${CMAKE_SOURCE_DIR}/packaging/systemd/stigmer-system.service
  ${CMAKE_SOURCE_DIR}/packaging/systemd/stigmer.sysusers
  ${CMAKE_SOURCE_DIR}/packaging/launchd/dev.stigmer.daemon.plist)
add_custom_command(OUTPUT ${STG_GENERATED}/stg_units.h
  COMMAND ${CMAKE_COMMAND} -DSRC_DIR=${CMAKE_SOURCE_DIR}/packaging
    -DOUT=${STG_GENERATED}/stg_units.h -P ${CMAKE_SOURCE_DIR}/packaging/embed_units.cmake
  DEPENDS ${_units_src} ${CMAKE_SOURCE_DIR}/packaging/embed_units.cmake
  COMMENT "Embedding the service templates" VERBATIM)
target_sources(stg_applets PRIVATE ${STG_GENERATED}/stg_units.h)

option(STIGMER_STATIC_DEPS "Link libuv, inih, jansson and SQLite statically where a static archive exists" OFF)
if(STIGMER_STATIC_DEPS)
  # pkg-config name prefix, the library, and the archive names to look for
  # (Debian's libuv1-dev calls its archive libuv_a.a; Homebrew's is libuv.a).
  set(_static_deps "LIBUV:uv:libuv_a.a,libuv.a" "INIH:inih:libinih.a"
    "JANSSON:jansson:libjansson.a" "SQLITE:sqlite3:libsqlite3.a")
  set(STIGMER_DYNAMIC_DEPS "")
  foreach(_d IN LISTS _static_deps)
    string(REPLACE ":" ";" _f "${_d}")
    list(GET _f 0 _pfx)
    list(GET _f 1 _lib)
    list(GET _f 2 _names)
    string(REPLACE "," ";" _names "${_names}")
    unset(_a)
    find_library(_a NAMES ${_names} HINTS ${${_pfx}_LIBRARY_DIRS} ${${_pfx}_LIBDIR} NO_CACHE)
    if(_a)
      # What the archive needs besides itself: pkg-config --static minus the
      # library (libuv: pthread dl rt; SQLite: m z).
      set(_extra ${${_pfx}_STATIC_LIBRARIES})
      list(REMOVE_ITEM _extra ${_lib} uv_a)
      set_property(TARGET PkgConfig::${_pfx} PROPERTY INTERFACE_LINK_LIBRARIES "${_a};${_extra}")
      message(STATUS "static: ${_lib} from ${_a}")
    else()
      list(APPEND STIGMER_DYNAMIC_DEPS ${_lib})
      message(WARNING "static: no static archive of ${_lib} (${_names}); linking it dynamically")
    endif()
  endforeach()
endif()
