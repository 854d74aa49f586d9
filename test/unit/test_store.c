/* lib/store: migrations, refusing a newer schema, durability across
 * reopen, and the task life cycle at the store level. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>
#include <uv.h>

#include "check.h"
#include "store.h"
#include "workflow.h"

static char dir[256], path[320];

static void fresh(void) {
  snprintf(dir, sizeof dir, "/tmp/stg-test-store-XXXXXX");
  if (mkdtemp(dir) == NULL)
    abort();
  snprintf(path, sizeof path, "%s/data/stigmer.db", dir);
}

static void cleanup(void) {
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
}

static const char wf_text[] =
    "[workflow]\nname = t\ninput.who = world\n"
    "[step a]\nrun = echo $STIGMER_INPUT_WHO\n"
    "[step b]\nagent = say {{steps.a.output}}\n";

static int user_version(void) {
  sqlite3 *db;
  int v = -1;
  if (sqlite3_open(path, &db) == SQLITE_OK) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
      v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return v;
}

TEST(migrate_from_empty) {
  fresh();
  stg_store_t *st;
  char err[512];
  int rc = stg_store_open(path, &st, err, sizeof err);
  if (rc)
    fprintf(stderr, "  %s\n", err);
  REQUIRE(rc == 0);
  stg_store_close(st);
  CHECK_EQ_INT(user_version(), stg_store_schema_version());
  CHECK(stg_store_schema_version() >= 1);
  struct stat sb;
  char d[320];
  snprintf(d, sizeof d, "%s/data", dir);
  CHECK(stat(d, &sb) == 0 && (sb.st_mode & 0777) == 0700);
  /* opening again migrates nothing and works */
  REQUIRE(stg_store_open(path, &st, err, sizeof err) == 0);
  stg_store_close(st);
  cleanup();
}

TEST(newer_schema_refused) {
  fresh();
  stg_store_t *st;
  char err[512];
  REQUIRE(stg_store_open(path, &st, err, sizeof err) == 0);
  stg_store_close(st);
  sqlite3 *db;
  REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
  char sql[64];
  snprintf(sql, sizeof sql, "PRAGMA user_version = %d", stg_store_schema_version() + 1);
  CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  CHECK_EQ_INT(stg_store_open(path, &st, err, sizeof err), UV_EPROTO);
  CHECK_CONTAINS(err, "newer than this stigmer");
  CHECK_CONTAINS(err, path);
  cleanup();
}

TEST(reopen_keeps_data_and_task_flow) {
  fresh();
  stg_store_t *st;
  char err[512];
  REQUIRE(stg_store_open(path, &st, err, sizeof err) == 0);
  stg_workflow_t *wf;
  REQUIRE(stg_workflow_parse(wf_text, strlen(wf_text), "t.ini", &wf, err, sizeof err) == 0);
  json_t *inputs = json_pack("{s:s}", "who", "you");
  stg_store_id_t eid;
  stg_store_submit_t sub = {wf, wf_text, inputs};
  REQUIRE(stg_store_exec_create(st, &sub, &eid) == 0);
  const char *id = eid.s;
  CHECK(strncmp(id, "ex_", 3) == 0 && strlen(id) == 19);
  json_decref(inputs);
  stg_workflow_free(wf);
  stg_store_close(st);

  REQUIRE(stg_store_open(path, &st, err, sizeof err) == 0);
  json_t *e = NULL;
  REQUIRE(stg_store_exec_get(st, id, &e) == 0);
  CHECK_STR(json_string_value(json_object_get(e, "state")), "pending");
  CHECK_STR(json_string_value(json_object_get(json_object_get(e, "inputs"), "who")), "you");
  CHECK_EQ_INT(json_array_size(json_object_get(e, "steps")), 2);
  json_decref(e);
  CHECK_EQ_INT(stg_store_exec_get(st, "ex_nope", &e), UV_ENOENT);

  /* claim, lease lapse, reclaim by another worker, old worker refused */
  json_t *task = NULL;
  stg_store_id_t ex;
  stg_store_claim_t c1 = {STG_TASK_WORKFLOW, "w1", 1};
  REQUIRE(stg_store_task_claim(st, &c1, &task, &ex) == 0);
  REQUIRE(task != NULL);
  CHECK_STR(ex.s, id);
  char tid[32];
  snprintf(tid, sizeof tid, "%s", json_string_value(json_object_get(task, "id")));
  json_decref(task);
  usleep(20000);
  bool cancelled;
  stg_store_lease_t w1 = {tid, "w1"}, w2 = {tid, "w2"};
  CHECK_EQ_INT(stg_store_task_heartbeat(st, &w1, 1000, &cancelled), UV_EBUSY);
  unsigned kinds = 0;
  CHECK_EQ_INT(stg_store_expire_leases(st, &kinds), 0);
  CHECK_EQ_INT(kinds, 1u << STG_TASK_WORKFLOW);
  int64_t at;
  CHECK_EQ_INT(stg_store_next_expiry(st, &at), 0);
  CHECK_EQ_INT(at, -1);
  stg_store_claim_t c2 = {STG_TASK_WORKFLOW, "w2", 30000};
  REQUIRE(stg_store_task_claim(st, &c2, &task, &ex) == 0);
  REQUIRE(task != NULL);
  json_decref(task);
  CHECK_EQ_INT(stg_store_next_expiry(st, &at), 0);
  CHECK(at > 0);
  CHECK_EQ_INT(stg_store_task_heartbeat(st, &w1, 1000, &cancelled), UV_EBUSY);
  CHECK_CONTAINS(stg_store_errmsg(st), "leased to 'w2'");
  CHECK_EQ_INT(stg_store_task_heartbeat(st, &w2, 1000, &cancelled), 0);
  CHECK(!cancelled);

  json_t *evs = json_pack("[{s:s,s:s},{s:s,s:s,s:s,s:s},{s:s,s:s,s:s,s:i,s:s}]",
                          "type", "step_started", "step", "a",
                          "type", "output", "step", "a", "stream", "out", "line", "you",
                          "type", "step_finished", "step", "a", "state", "succeeded",
                          "exit_code", 0, "output", "you\n");
  stg_store_appended_t app;
  CHECK_EQ_INT(stg_store_task_events(st, &w2, evs, &app), 0);
  CHECK_EQ_INT(app.next, 4); /* execution_started is 1 */
  CHECK_STR(app.exec.s, id);
  json_decref(evs);
  evs = json_pack("[{s:s,s:s}]", "type", "step_started", "step", "a");
  CHECK_EQ_INT(stg_store_task_events(st, &w2, evs, &app), UV_EBUSY);
  json_decref(evs);
  evs = json_pack("[{s:s,s:s}]", "type", "step_started", "step", "zz");
  CHECK_EQ_INT(stg_store_task_events(st, &w2, evs, &app), UV_EINVAL);
  CHECK_CONTAINS(stg_store_errmsg(st), "no step 'zz'");
  json_decref(evs);

  stg_store_agent_task_t ao = {id, "b", "say you", NULL, 5000};
  stg_store_id_t atid, atid2;
  CHECK_EQ_INT(stg_store_task_create_agent(st, &ao, &atid), 0);
  const char *aid = atid.s;
  ao.step = "a";
  CHECK_EQ_INT(stg_store_task_create_agent(st, &ao, &atid2), UV_EINVAL);
  json_t *at_ = NULL;
  bool final = true;
  CHECK_EQ_INT(stg_store_task_get(st, aid, &at_, &final), 0);
  CHECK(!final);
  json_decref(at_);
  stg_store_claim_t c3 = {STG_TASK_AGENT, "ar", 30000};
  REQUIRE(stg_store_task_claim(st, &c3, &task, &ex) == 0);
  REQUIRE(task != NULL);
  CHECK_STR(json_string_value(json_object_get(json_object_get(task, "payload"), "prompt")),
            "say you");
  json_decref(task);
  stg_store_lease_t ar = {aid, "ar"};
  stg_store_result_t ok_hi = {"succeeded", NULL, "hi"};
  CHECK_EQ_INT(stg_store_task_complete(st, &ar, &ok_hi, &ex), 0);
  CHECK_EQ_INT(stg_store_task_get(st, aid, &at_, &final), 0);
  CHECK(final);
  CHECK_STR(json_string_value(json_object_get(at_, "output")), "hi");
  json_decref(at_);

  stg_store_result_t ok = {"succeeded", NULL, NULL};
  CHECK_EQ_INT(stg_store_task_complete(st, &w2, &ok, &ex), 0);
  CHECK_EQ_INT(stg_store_task_complete(st, &w2, &ok, &ex), UV_EBUSY);
  stg_store_close(st);

  REQUIRE(stg_store_open(path, &st, err, sizeof err) == 0);
  stg_store_events_t ev;
  REQUIRE(stg_store_events(st, id, 0, &ev) == 0);
  CHECK(ev.finished);
  json_t *list = ev.events;
  CHECK_EQ_INT(json_array_size(list), 5);
  CHECK_STR(json_string_value(json_object_get(json_array_get(list, 0), "type")),
            "execution_started");
  CHECK_STR(json_string_value(json_object_get(json_array_get(list, 4), "type")),
            "execution_finished");
  json_decref(list);
  REQUIRE(stg_store_events(st, id, 2, &ev) == 0);
  CHECK_EQ_INT(json_array_size(ev.events), 3);
  CHECK_EQ_INT(ev.next, 5);
  CHECK(ev.finished);
  json_decref(ev.events);
  REQUIRE(stg_store_events(st, id, 5, &ev) == 0);
  CHECK_EQ_INT(json_array_size(ev.events), 0);
  CHECK_EQ_INT(ev.next, 5);
  CHECK(ev.finished);
  json_decref(ev.events);
  REQUIRE(stg_store_exec_get(st, id, &e) == 0);
  CHECK_STR(json_string_value(json_object_get(e, "state")), "succeeded");
  json_t *s0 = json_array_get(json_object_get(e, "steps"), 0);
  CHECK_STR(json_string_value(json_object_get(s0, "output")), "you\n");
  CHECK_EQ_INT(json_integer_value(json_object_get(s0, "exit_code")), 0);
  json_decref(e);
  json_t *sum = NULL;
  CHECK_EQ_INT(stg_store_exec_cancel(st, id, &sum), UV_EBUSY);
  stg_store_close(st);
  cleanup();
}

TEST(cancel) {
  fresh();
  stg_store_t *st;
  char err[512];
  REQUIRE(stg_store_open(path, &st, err, sizeof err) == 0);
  stg_workflow_t *wf;
  REQUIRE(stg_workflow_parse(wf_text, strlen(wf_text), "t.ini", &wf, err, sizeof err) == 0);
  json_t *inputs = json_object();
  stg_store_id_t e1, e2;
  stg_store_submit_t sub = {wf, wf_text, inputs};
  REQUIRE(stg_store_exec_create(st, &sub, &e1) == 0);
  REQUIRE(stg_store_exec_create(st, &sub, &e2) == 0);
  const char *id = e1.s, *id2 = e2.s;
  json_decref(inputs);
  stg_workflow_free(wf);
  json_t *list;
  REQUIRE(stg_store_exec_list(st, 10, NULL, &list) == 0);
  CHECK_EQ_INT(json_array_size(list), 2);
  CHECK_STR(json_string_value(json_object_get(json_array_get(list, 0), "id")), id2);
  json_decref(list);
  json_t *task, *sum = NULL;
  stg_store_id_t ex;
  stg_store_claim_t cw = {STG_TASK_WORKFLOW, "w", 30000};
  REQUIRE(stg_store_task_claim(st, &cw, &task, &ex) == 0);
  REQUIRE(task);
  char tid[32];
  snprintf(tid, sizeof tid, "%s", json_string_value(json_object_get(task, "id")));
  json_decref(task);
  CHECK_STR(ex.s, id);
  REQUIRE(stg_store_exec_cancel(st, id, &sum) == 0);
  CHECK_STR(json_string_value(json_object_get(sum, "state")), "cancelled");
  json_decref(sum);
  REQUIRE(stg_store_exec_cancel(st, id2, &sum) == 0);
  json_decref(sum);
  bool cancelled = false;
  stg_store_lease_t lw = {tid, "w"};
  CHECK_EQ_INT(stg_store_task_heartbeat(st, &lw, 30000, &cancelled), 0);
  CHECK(cancelled);
  /* the second execution's pending task was cancelled: nothing to claim */
  REQUIRE(stg_store_task_claim(st, &cw, &task, &ex) == 0);
  CHECK(task == NULL);
  REQUIRE(stg_store_exec_list(st, 10, "cancelled", &list) == 0);
  CHECK_EQ_INT(json_array_size(list), 2);
  json_decref(list);
  stg_task_kind_t kind;
  CHECK_EQ_INT(stg_store_task_release(st, &lw, &kind), 0);
  bool final = false;
  REQUIRE(stg_store_task_get(st, tid, &task, &final) == 0);
  CHECK(final);
  CHECK_STR(json_string_value(json_object_get(task, "state")), "cancelled");
  json_decref(task);
  stg_store_close(st);
  cleanup();
}

int main(void) {
  RUN(migrate_from_empty);
  RUN(newer_schema_refused);
  RUN(reopen_keeps_data_and_task_flow);
  RUN(cancel);
  return CHECK_DONE();
}
