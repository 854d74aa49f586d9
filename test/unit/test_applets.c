/* The applet table: sorted, no duplicates, every link names an applet;
 * dispatch by name. */
#include <string.h>

#include "applets.h"
#include "check.h"

TEST(table_sorted_without_duplicates) {
  for (unsigned i = 1; i < stg_applets_count; i++)
    CHECK(strcmp(stg_applets[i - 1].name, stg_applets[i].name) < 0);
}

TEST(links_point_at_applets) {
  for (unsigned i = 0; i < stg_applets_count; i++) {
    const stg_applet_t *a = &stg_applets[i];
    const stg_applet_t *t = stg_applet_find(a->applet);
    REQUIRE(t != NULL);
    CHECK(t->main == a->main);
    CHECK(strcmp(t->applet, t->name) == 0);
  }
}

TEST(find_every_entry_and_nothing_else) {
  for (unsigned i = 0; i < stg_applets_count; i++)
    CHECK(stg_applet_find(stg_applets[i].name) == &stg_applets[i]);
  CHECK(stg_applet_find("") == NULL);
  CHECK(stg_applet_find("stigmer-") == NULL);
  CHECK(stg_applet_find("zzz") == NULL);
  CHECK(stg_applet_find("aaa") == NULL);
}

TEST(required_applets_present) {
  const char *names[] = {"stigmer", "internal-server", "internal-workflow-runner",
                         "agent-runner-supervisor", "stigmer-server",
                         "stigmer-workflow-runner"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    CHECK(stg_applet_find(names[i]) != NULL);
  CHECK((stg_applet_find("stigmer")->flags & STG_APPLET_HIDDEN) == 0);
  CHECK(stg_applet_find("internal-server")->flags & STG_APPLET_HIDDEN);
}

TEST(dispatch_unknown_argv0_is_127) {
  char *argv[] = {"/usr/bin/no-such-applet", NULL};
  CHECK_EQ_INT(stg_dispatch(1, argv), 127);
}

TEST(dispatch_unknown_command_is_2) {
  char *argv[] = {"/x/stigmer", "frobnicate", NULL};
  CHECK_EQ_INT(stg_dispatch(2, argv), 2);
}

TEST(dispatch_link_name_and_first_argument) {
  char *a1[] = {"/x/stigmer-server", "--help", NULL};
  CHECK_EQ_INT(stg_dispatch(2, a1), 0);
  char *a2[] = {"stigmer", "internal-server", "--help", NULL};
  CHECK_EQ_INT(stg_dispatch(3, a2), 0);
  char *a3[] = {"stigmer", "internal-server", "--no-such-flag", NULL};
  CHECK_EQ_INT(stg_dispatch(3, a3), 2);
}

int main(void) {
  RUN(table_sorted_without_duplicates);
  RUN(links_point_at_applets);
  RUN(find_every_entry_and_nothing_else);
  RUN(required_applets_present);
  RUN(dispatch_unknown_argv0_is_127);
  RUN(dispatch_unknown_command_is_2);
  RUN(dispatch_link_name_and_first_argument);
  return CHECK_DONE();
}
