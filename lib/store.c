/* The server's store on SQLite. See store.h. */
#include "store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>
#include <uv.h>

#define MAX_STMTS 64

struct stg_store_s {
  sqlite3 *db;
  struct {
    const char *sql;        /* the literal, compared by address */
    sqlite3_stmt *stmt;
  } cache[MAX_STMTS];
  unsigned n_cache;
  char errmsg[512];
};

/* --- migrations -------------------------------------------------------------------- */

/* Step i takes the schema from version i to i + 1. Append only. */
static const char *const migrations[] = {
    /* 1 */
    "CREATE TABLE executions ("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  definition TEXT NOT NULL,"
    "  inputs TEXT NOT NULL,"
    "  error TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  started_at INTEGER,"
    "  finished_at INTEGER,"
    "  last_seq INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX executions_state ON executions(state);"
    "CREATE TABLE steps ("
    "  execution_id TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,"
    "  idx INTEGER NOT NULL,"
    "  name TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'pending',"
    "  exit_code INTEGER,"
    "  output TEXT,"
    "  started_at INTEGER,"
    "  finished_at INTEGER,"
    "  PRIMARY KEY (execution_id, idx),"
    "  UNIQUE (execution_id, name)"
    ");"
    "CREATE TABLE events ("
    "  execution_id TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,"
    "  seq INTEGER NOT NULL,"
    "  at INTEGER NOT NULL,"
    "  type TEXT NOT NULL,"
    "  data TEXT NOT NULL,"
    "  PRIMARY KEY (execution_id, seq)"
    ") WITHOUT ROWID;"
    "CREATE TABLE tasks ("
    "  id TEXT PRIMARY KEY,"
    "  kind TEXT NOT NULL,"
    "  execution_id TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,"
    "  state TEXT NOT NULL,"
    "  worker TEXT,"
    "  lease_until INTEGER,"
    "  step TEXT,"
    "  payload TEXT,"
    "  output TEXT,"
    "  error TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  finished_at INTEGER"
    ");"
    "CREATE INDEX tasks_pending ON tasks(state, kind);"
    "CREATE INDEX tasks_execution ON tasks(execution_id);",
};

#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

int stg_store_schema_version(void) { return SCHEMA_VERSION; }

/* --- helpers ----------------------------------------------------------------------- */

static int set_err(stg_store_t *st, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int set_err(stg_store_t *st, int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(st->errmsg, sizeof st->errmsg, fmt, ap);
  va_end(ap);
  return rc;
}

static int db_err(stg_store_t *st, const char *what) {
  return set_err(st, UV_EIO, "%s: %s", what, sqlite3_errmsg(st->db));
}

const char *stg_store_errmsg(const stg_store_t *st) { return st->errmsg; }

int64_t stg_store_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *stg_store_format_time(int64_t ms, char *buf, size_t len) {
  time_t s = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  char tmp[32];
  strftime(tmp, sizeof tmp, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf, len, "%s.%03dZ", tmp, (int)(ms % 1000));
  return buf;
}

static json_t *json_time(sqlite3_stmt *s, int col) {
  if (sqlite3_column_type(s, col) == SQLITE_NULL)
    return json_null();
  char buf[40];
  return json_string(stg_store_format_time(sqlite3_column_int64(s, col), buf, sizeof buf));
}

static json_t *json_text(sqlite3_stmt *s, int col) {
  const unsigned char *t = sqlite3_column_text(s, col);
  if (t == NULL)
    return json_null();
  json_t *j = json_stringn((const char *)t, (size_t)sqlite3_column_bytes(s, col));
  return j ? j : json_string("");
}

static const char *col_text(sqlite3_stmt *s, int col) {
  const unsigned char *t = sqlite3_column_text(s, col);
  return t ? (const char *)t : NULL;
}

static void make_id(const char *prefix, char *buf, size_t len) {
  unsigned char r[8];
  if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
    /* never in practice; fall back to time and a counter */
    static uint64_t n;
    uint64_t v = (uint64_t)stg_store_now() * 1000003u + ++n;
    memcpy(r, &v, sizeof r);
  }
  snprintf(buf, len, "%s%02x%02x%02x%02x%02x%02x%02x%02x", prefix, r[0], r[1], r[2], r[3],
           r[4], r[5], r[6], r[7]);
}

/* The cached statement for a SQL literal, reset and unbound. */
static sqlite3_stmt *stmt(stg_store_t *st, const char *sql) {
  for (unsigned i = 0; i < st->n_cache; i++) {
    if (st->cache[i].sql == sql) {
      sqlite3_reset(st->cache[i].stmt);
      sqlite3_clear_bindings(st->cache[i].stmt);
      return st->cache[i].stmt;
    }
  }
  sqlite3_stmt *s = NULL;
  if (sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL) != SQLITE_OK) {
    db_err(st, "prepare a statement");
    return NULL;
  }
  if (st->n_cache < MAX_STMTS) {
    st->cache[st->n_cache].sql = sql;
    st->cache[st->n_cache].stmt = s;
    st->n_cache++;
  }
  /* MAX_STMTS is larger than the number of literals below */
  return s;
}

static int exec_sql(stg_store_t *st, const char *sql) {
  char *msg = NULL;
  if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    set_err(st, UV_EIO, "%s", msg ? msg : sqlite3_errmsg(st->db));
    sqlite3_free(msg);
    return UV_EIO;
  }
  return 0;
}

static int begin(stg_store_t *st) { return exec_sql(st, "BEGIN IMMEDIATE"); }

/* Commits when rc is 0, else rolls back; returns rc or the commit's error. */
static int end(stg_store_t *st, int rc) {
  if (rc == 0) {
    if (exec_sql(st, "COMMIT") == 0)
      return 0;
    rc = UV_EIO;
  }
  char keep[sizeof st->errmsg];
  memcpy(keep, st->errmsg, sizeof keep);
  sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
  memcpy(st->errmsg, keep, sizeof keep);
  return rc;
}

/* Runs a statement expected to finish without rows. */
static int step_done(stg_store_t *st, sqlite3_stmt *s, const char *what) {
  int r = sqlite3_step(s);
  sqlite3_reset(s);
  if (r != SQLITE_DONE)
    return db_err(st, what);
  return 0;
}

static void bind_text(sqlite3_stmt *s, int i, const char *t) {
  if (t)
    sqlite3_bind_text(s, i, t, -1, SQLITE_TRANSIENT);
  else
    sqlite3_bind_null(s, i);
}

/* --- open -------------------------------------------------------------------------- */

static int mkdir_parent(const char *path, char *err, size_t errlen) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == NULL || slash == dir)
    return 0;
  *slash = '\0';
  /* the parent's parent (STIGMER_HOME) normally exists; make both */
  for (char *p = dir + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
      int e = errno;
      snprintf(err, errlen, "create %s: %s", dir, strerror(e));
      return -e;
    }
    *p = '/';
  }
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    int e = errno;
    snprintf(err, errlen, "create %s: %s", dir, strerror(e));
    return -e;
  }
  return 0;
}

static int migrate(stg_store_t *st, const char *path, char *err, size_t errlen) {
  sqlite3_stmt *s = NULL;
  int version = 0;
  if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK &&
      sqlite3_step(s) == SQLITE_ROW)
    version = sqlite3_column_int(s, 0);
  sqlite3_finalize(s);
  if (version > SCHEMA_VERSION) {
    snprintf(err, errlen, "open %s: the database has schema version %d, newer than this "
             "stigmer knows (%d); run a newer stigmer or move the file away", path, version,
             SCHEMA_VERSION);
    return UV_EPROTO;
  }
  for (int v = version; v < SCHEMA_VERSION; v++) {
    char setv[64];
    snprintf(setv, sizeof setv, "PRAGMA user_version = %d", v + 1);
    int rc = begin(st);
    if (rc == 0)
      rc = exec_sql(st, migrations[v]);
    if (rc == 0)
      rc = exec_sql(st, setv);
    rc = end(st, rc);
    if (rc != 0) {
      snprintf(err, errlen, "migrate %s from schema version %d to %d: %s", path, v, v + 1,
               st->errmsg);
      return rc;
    }
  }
  return 0;
}

int stg_store_open(const char *path, stg_store_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (errlen)
    err[0] = '\0';
  int rc = mkdir_parent(path, err, errlen);
  if (rc != 0)
    return rc;
  stg_store_t *st = calloc(1, sizeof *st);
  if (st == NULL)
    return UV_ENOMEM;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path, &st->db, flags, NULL) != SQLITE_OK) {
    snprintf(err, errlen, "open %s: %s", path,
             st->db ? sqlite3_errmsg(st->db) : "out of memory");
    rc = UV_EIO;
    goto out;
  }
  chmod(path, 0600);
  sqlite3_busy_timeout(st->db, 5000);
  sqlite3_extended_result_codes(st->db, 1);
  static const char pragmas[] =
      "PRAGMA journal_mode = WAL;"
      "PRAGMA synchronous = FULL;"
      "PRAGMA foreign_keys = ON;";
  if (exec_sql(st, pragmas) != 0) {
    snprintf(err, errlen, "open %s: %s", path, st->errmsg);
    rc = UV_EIO;
    goto out;
  }
  rc = migrate(st, path, err, errlen);

out:
  if (rc != 0) {
    stg_store_close(st);
    return rc;
  }
  *out = st;
  return 0;
}

void stg_store_close(stg_store_t *st) {
  if (st == NULL)
    return;
  for (unsigned i = 0; i < st->n_cache; i++)
    sqlite3_finalize(st->cache[i].stmt);
  sqlite3_close(st->db);
  free(st);
}

/* --- events ------------------------------------------------------------------------ */

static const char SQL_NEXT_SEQ[] =
    "UPDATE executions SET last_seq = last_seq + 1 WHERE id = ?1 RETURNING last_seq";
static const char SQL_ADD_EVENT[] =
    "INSERT INTO events (execution_id, seq, at, type, data) VALUES (?1, ?2, ?3, ?4, ?5)";

/* Appends an event; data (may be NULL) holds its fields besides seq, at
 * and type. Sets *seq. */
static int add_event(stg_store_t *st, const char *exec_id, int64_t now, const char *type,
                     json_t *data, int64_t *seq) {
  sqlite3_stmt *s = stmt(st, SQL_NEXT_SEQ);
  if (s == NULL)
    return UV_EIO;
  sqlite3_bind_text(s, 1, exec_id, -1, SQLITE_TRANSIENT);
  if (sqlite3_step(s) != SQLITE_ROW) {
    sqlite3_reset(s);
    return db_err(st, "number an event");
  }
  int64_t n = sqlite3_column_int64(s, 0);
  sqlite3_reset(s);
  char *text = data ? json_dumps(data, JSON_COMPACT) : strdup("{}");
  if (text == NULL)
    return set_err(st, UV_ENOMEM, "out of memory");
  s = stmt(st, SQL_ADD_EVENT);
  if (s == NULL) {
    free(text);
    return UV_EIO;
  }
  sqlite3_bind_text(s, 1, exec_id, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 2, n);
  sqlite3_bind_int64(s, 3, now);
  sqlite3_bind_text(s, 4, type, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 5, text, -1, SQLITE_TRANSIENT);
  free(text);
  int rc = step_done(st, s, "record an event");
  if (rc == 0 && seq)
    *seq = n;
  return rc;
}

/* add_event that takes a reference to data. */
static int add_event_take(stg_store_t *st, const char *exec_id, int64_t now, const char *type,
                          json_t *data, int64_t *seq) {
  if (data == NULL)
    return set_err(st, UV_ENOMEM, "out of memory");
  int rc = add_event(st, exec_id, now, type, data, seq);
  json_decref(data);
  return rc;
}

/* --- executions -------------------------------------------------------------------- */

static const char SQL_ADD_EXEC[] =
    "INSERT INTO executions (id, name, state, definition, inputs, created_at) "
    "VALUES (?1, ?2, 'pending', ?3, ?4, ?5)";
static const char SQL_ADD_STEP[] =
    "INSERT INTO steps (execution_id, idx, name, kind) VALUES (?1, ?2, ?3, ?4)";
static const char SQL_ADD_TASK[] =
    "INSERT INTO tasks (id, kind, execution_id, state, step, payload, created_at) "
    "VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6)";

int stg_store_exec_create(stg_store_t *st, const stg_store_submit_t *o, stg_store_id_t *eid) {
  int64_t now = stg_store_now();
  const stg_workflow_t *wf = o->wf;
  const char *definition = o->definition;
  char *in = json_dumps(o->inputs, JSON_COMPACT);
  if (in == NULL)
    return set_err(st, UV_ENOMEM, "out of memory");
  char tid[32];
  const char *id = eid->s;
  make_id("ex_", eid->s, sizeof eid->s);
  make_id("tk_", tid, sizeof tid);
  int rc = begin(st);
  if (rc != 0)
    goto out;
  sqlite3_stmt *s = stmt(st, SQL_ADD_EXEC);
  rc = UV_EIO;
  if (s == NULL)
    goto out_tx;
  bind_text(s, 1, id);
  bind_text(s, 2, wf->name);
  bind_text(s, 3, definition);
  bind_text(s, 4, in);
  sqlite3_bind_int64(s, 5, now);
  if ((rc = step_done(st, s, "record the execution")) != 0)
    goto out_tx;
  for (unsigned i = 0; i < wf->n_steps; i++) {
    s = stmt(st, SQL_ADD_STEP);
    rc = UV_EIO;
    if (s == NULL)
      goto out_tx;
    bind_text(s, 1, id);
    sqlite3_bind_int(s, 2, (int)i);
    bind_text(s, 3, wf->steps[i].name);
    bind_text(s, 4, wf->steps[i].kind == STG_WORKFLOW_RUN ? "run" : "agent");
    if ((rc = step_done(st, s, "record a step")) != 0)
      goto out_tx;
  }
  s = stmt(st, SQL_ADD_TASK);
  rc = UV_EIO;
  if (s == NULL)
    goto out_tx;
  bind_text(s, 1, tid);
  bind_text(s, 2, "workflow");
  bind_text(s, 3, id);
  bind_text(s, 4, NULL);
  bind_text(s, 5, NULL);
  sqlite3_bind_int64(s, 6, now);
  rc = step_done(st, s, "record the workflow task");
out_tx:
  rc = end(st, rc);
out:
  free(in);
  return rc;
}

#define SUMMARY_COLS "id, name, state, created_at, started_at, finished_at"

static json_t *summary_row(sqlite3_stmt *s) {
  return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}", "id", json_text(s, 0), "name",
                   json_text(s, 1), "state", json_text(s, 2), "created_at", json_time(s, 3),
                   "started_at", json_time(s, 4), "finished_at", json_time(s, 5));
}

static const char SQL_LIST_ALL[] =
    "SELECT " SUMMARY_COLS " FROM executions ORDER BY created_at DESC, rowid DESC LIMIT ?1";
static const char SQL_LIST_STATE[] =
    "SELECT " SUMMARY_COLS " FROM executions WHERE state = ?2 "
    "ORDER BY created_at DESC, rowid DESC LIMIT ?1";

int stg_store_exec_list(stg_store_t *st, int limit, const char *state, json_t **out) {
  sqlite3_stmt *s = stmt(st, state ? SQL_LIST_STATE : SQL_LIST_ALL);
  if (s == NULL)
    return UV_EIO;
  sqlite3_bind_int(s, 1, limit);
  if (state)
    bind_text(s, 2, state);
  json_t *arr = json_array();
  int r;
  while ((r = sqlite3_step(s)) == SQLITE_ROW)
    json_array_append_new(arr, summary_row(s));
  sqlite3_reset(s);
  if (r != SQLITE_DONE) {
    json_decref(arr);
    return db_err(st, "list executions");
  }
  *out = arr;
  return 0;
}

static const char SQL_GET_EXEC[] =
    "SELECT " SUMMARY_COLS ", inputs, error FROM executions WHERE id = ?1";
static const char SQL_GET_STEPS[] =
    "SELECT name, kind, state, exit_code, output, started_at, finished_at FROM steps "
    "WHERE execution_id = ?1 ORDER BY idx";

/* The summary (full: plus inputs, error, steps) of one execution. */
static int get_exec(stg_store_t *st, const char *id, bool full, json_t **out) {
  sqlite3_stmt *s = stmt(st, SQL_GET_EXEC);
  if (s == NULL)
    return UV_EIO;
  bind_text(s, 1, id);
  int r = sqlite3_step(s);
  if (r == SQLITE_DONE) {
    sqlite3_reset(s);
    return set_err(st, UV_ENOENT, "no execution %s", id);
  }
  if (r != SQLITE_ROW) {
    sqlite3_reset(s);
    return db_err(st, "read the execution");
  }
  json_t *o = summary_row(s);
  if (full) {
    json_t *inputs = json_loads(col_text(s, 6) ? col_text(s, 6) : "{}", 0, NULL);
    json_object_set_new(o, "inputs", inputs ? inputs : json_object());
    json_object_set_new(o, "error", json_text(s, 7));
  }
  sqlite3_reset(s);
  if (!full) {
    *out = o;
    return 0;
  }
  s = stmt(st, SQL_GET_STEPS);
  if (s == NULL) {
    json_decref(o);
    return UV_EIO;
  }
  bind_text(s, 1, id);
  json_t *steps = json_array();
  while ((r = sqlite3_step(s)) == SQLITE_ROW) {
    json_t *ec = sqlite3_column_type(s, 3) == SQLITE_NULL ? json_null()
                                                          : json_integer(sqlite3_column_int(s, 3));
    json_array_append_new(steps, json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "name",
                                           json_text(s, 0), "kind", json_text(s, 1), "state",
                                           json_text(s, 2), "exit_code", ec, "output",
                                           json_text(s, 4), "started_at", json_time(s, 5),
                                           "finished_at", json_time(s, 6)));
  }
  sqlite3_reset(s);
  json_object_set_new(o, "steps", steps);
  if (r != SQLITE_DONE) {
    json_decref(o);
    return db_err(st, "read the steps");
  }
  *out = o;
  return 0;
}

int stg_store_exec_get(stg_store_t *st, const char *id, json_t **out) {
  return get_exec(st, id, true, out);
}

static const char SQL_EXEC_STATE[] = "SELECT state FROM executions WHERE id = ?1";

/* The execution's state into buf; UV_ENOENT when there is none. */
static int exec_state(stg_store_t *st, const char *id, char *buf, size_t len) {
  sqlite3_stmt *s = stmt(st, SQL_EXEC_STATE);
  if (s == NULL)
    return UV_EIO;
  bind_text(s, 1, id);
  int r = sqlite3_step(s);
  if (r == SQLITE_ROW)
    snprintf(buf, len, "%s", col_text(s, 0) ? col_text(s, 0) : "");
  sqlite3_reset(s);
  if (r == SQLITE_DONE)
    return set_err(st, UV_ENOENT, "no execution %s", id);
  if (r != SQLITE_ROW)
    return db_err(st, "read the execution");
  return 0;
}

static bool finished_state(const char *s) {
  return strcmp(s, "succeeded") == 0 || strcmp(s, "failed") == 0 ||
         strcmp(s, "cancelled") == 0;
}

static const char SQL_FINISH_EXEC[] =
    "UPDATE executions SET state = ?2, error = ?3, finished_at = ?4 WHERE id = ?1";
static const char SQL_STEPS_END[] =
    "UPDATE steps SET state = ?2, finished_at = CASE WHEN state = 'running' THEN ?3 "
    "ELSE finished_at END WHERE execution_id = ?1 AND state IN ('pending', 'running')";

/* Marks an execution finished: its unfinished steps get step_state, and
 * execution_finished is recorded. */
static int finish_exec(stg_store_t *st, const char *id, int64_t now, const char *state,
                       const char *error, const char *step_state) {
  sqlite3_stmt *s = stmt(st, SQL_FINISH_EXEC);
  if (s == NULL)
    return UV_EIO;
  bind_text(s, 1, id);
  bind_text(s, 2, state);
  bind_text(s, 3, error);
  sqlite3_bind_int64(s, 4, now);
  int rc = step_done(st, s, "finish the execution");
  if (rc != 0)
    return rc;
  s = stmt(st, SQL_STEPS_END);
  if (s == NULL)
    return UV_EIO;
  bind_text(s, 1, id);
  bind_text(s, 2, step_state);
  sqlite3_bind_int64(s, 3, now);
  if ((rc = step_done(st, s, "finish the steps")) != 0)
    return rc;
  return add_event_take(st, id, now, "execution_finished",
                        json_pack("{s:s, s:o}", "state", state, "error",
                                  error ? json_string(error) : json_null()),
                        NULL);
}

static const char SQL_CANCEL_TASKS[] =
    "UPDATE tasks SET state = 'cancelled', finished_at = ?2 "
    "WHERE execution_id = ?1 AND state = 'pending'";

int stg_store_exec_cancel(stg_store_t *st, const char *id, json_t **out) {
  int64_t now = stg_store_now();
  int rc = begin(st);
  if (rc != 0)
    return rc;
  char state[32];
  if ((rc = exec_state(st, id, state, sizeof state)) != 0)
    goto out;
  if (finished_state(state)) {
    rc = set_err(st, UV_EBUSY, "execution %s already finished (%s)", id, state);
    goto out;
  }
  sqlite3_stmt *s = stmt(st, SQL_CANCEL_TASKS);
  rc = UV_EIO;
  if (s == NULL)
    goto out;
  bind_text(s, 1, id);
  sqlite3_bind_int64(s, 2, now);
  if ((rc = step_done(st, s, "cancel the tasks")) != 0)
    goto out;
  rc = finish_exec(st, id, now, "cancelled", "cancelled", "cancelled");
out:
  rc = end(st, rc);
  if (rc == 0)
    rc = get_exec(st, id, false, out);
  return rc;
}

static const char SQL_EVENTS[] =
    "SELECT seq, at, type, data FROM events WHERE execution_id = ?1 AND seq > ?2 "
    "ORDER BY seq LIMIT ?3";
static const char SQL_FINISHED_SEQ[] =
    "SELECT min(seq) FROM events WHERE execution_id = ?1 AND type = 'execution_finished'";

int stg_store_events(stg_store_t *st, const char *exec_id, int64_t after,
                     stg_store_events_t *out) {
  const int limit = STG_STORE_EVENTS_MAX;
  char state[32];
  int rc = exec_state(st, exec_id, state, sizeof state);
  if (rc != 0)
    return rc;
  sqlite3_stmt *s = stmt(st, SQL_EVENTS);
  if (s == NULL)
    return UV_EIO;
  bind_text(s, 1, exec_id);
  sqlite3_bind_int64(s, 2, after);
  sqlite3_bind_int(s, 3, limit);
  json_t *arr = json_array();
  int64_t last = after;
  int r;
  while ((r = sqlite3_step(s)) == SQLITE_ROW) {
    /* seq, at and type first, then the event's own fields */
    last = sqlite3_column_int64(s, 0);
    json_t *e = json_pack("{s:I, s:o, s:o}", "seq", (json_int_t)last, "at", json_time(s, 1),
                          "type", json_text(s, 2));
    json_t *d = json_loads(col_text(s, 3) ? col_text(s, 3) : "{}", 0, NULL);
    if (e && json_is_object(d))
      json_object_update_missing(e, d);
    json_decref(d);
    if (e)
      json_array_append_new(arr, e);
  }
  sqlite3_reset(s);
  if (r != SQLITE_DONE) {
    json_decref(arr);
    return db_err(st, "read the events");
  }
  s = stmt(st, SQL_FINISHED_SEQ);
  if (s == NULL) {
    json_decref(arr);
    return UV_EIO;
  }
  bind_text(s, 1, exec_id);
  bool fin = false;
  if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
    fin = sqlite3_column_int64(s, 0) <= last;
  sqlite3_reset(s);
  out->events = arr;
  out->next = last;
  out->finished = fin;
  return 0;
}

/* --- tasks ------------------------------------------------------------------------- */

static const char *kind_name(stg_task_kind_t k) {
  return k == STG_TASK_WORKFLOW ? "workflow" : "agent";
}

static const char SQL_PENDING[] =
    "SELECT id, execution_id, payload FROM tasks WHERE state = 'pending' AND kind = ?1 "
    "ORDER BY created_at, rowid LIMIT 1";
static const char SQL_LEASE[] =
    "UPDATE tasks SET state = 'leased', worker = ?2, lease_until = ?3 WHERE id = ?1";
static const char SQL_START_EXEC[] =
    "UPDATE executions SET state = 'running', started_at = ?2 "
    "WHERE id = ?1 AND state = 'pending' RETURNING id";
static const char SQL_DEFINITION[] =
    "SELECT definition, inputs FROM executions WHERE id = ?1";
static const char SQL_STEP_STATES[] =
    "SELECT name, state, output FROM steps WHERE execution_id = ?1 ORDER BY idx";

static int workflow_payload(stg_store_t *st, const char *exec_id, json_t **out) {
  sqlite3_stmt *s = stmt(st, SQL_DEFINITION);
  if (s == NULL)
    return UV_EIO;
  bind_text(s, 1, exec_id);
  if (sqlite3_step(s) != SQLITE_ROW) {
    sqlite3_reset(s);
    return db_err(st, "read the definition");
  }
  json_t *inputs = json_loads(col_text(s, 1) ? col_text(s, 1) : "{}", 0, NULL);
  json_t *p = json_pack("{s:o, s:o}", "definition", json_text(s, 0), "inputs",
                        inputs ? inputs : json_object());
  sqlite3_reset(s);
  s = stmt(st, SQL_STEP_STATES);
  if (s == NULL) {
    json_decref(p);
    return UV_EIO;
  }
  bind_text(s, 1, exec_id);
  json_t *steps = json_array();
  int r;
  while ((r = sqlite3_step(s)) == SQLITE_ROW)
    json_array_append_new(steps, json_pack("{s:o, s:o, s:o}", "name", json_text(s, 0),
                                           "state", json_text(s, 1), "output",
                                           json_text(s, 2)));
  sqlite3_reset(s);
  json_object_set_new(p, "steps", steps);
  if (r != SQLITE_DONE) {
    json_decref(p);
    return db_err(st, "read the steps");
  }
  *out = p;
  return 0;
}

int stg_store_task_claim(stg_store_t *st, const stg_store_claim_t *o, json_t **task,
                         stg_store_id_t *exec) {
  stg_task_kind_t kind = o->kind;
  const char *worker = o->worker;
  uint64_t lease_ms = o->lease_ms;
  int64_t now = stg_store_now();
  *task = NULL;
  int rc = begin(st);
  if (rc != 0)
    return rc;
  sqlite3_stmt *s = stmt(st, SQL_PENDING);
  char id[32] = "", ex[32] = "";
  json_t *payload = NULL;
  rc = UV_EIO;
  if (s == NULL)
    goto out;
  bind_text(s, 1, kind_name(kind));
  int r = sqlite3_step(s);
  if (r == SQLITE_DONE) {
    sqlite3_reset(s);
    rc = 0;
    goto out;
  }
  if (r != SQLITE_ROW) {
    sqlite3_reset(s);
    rc = db_err(st, "find a pending task");
    goto out;
  }
  snprintf(id, sizeof id, "%s", col_text(s, 0));
  snprintf(ex, sizeof ex, "%s", col_text(s, 1));
  if (col_text(s, 2))
    payload = json_loads(col_text(s, 2), 0, NULL);
  sqlite3_reset(s);
  s = stmt(st, SQL_LEASE);
  if (s == NULL)
    goto out;
  bind_text(s, 1, id);
  bind_text(s, 2, worker);
  sqlite3_bind_int64(s, 3, now + (int64_t)lease_ms);
  if ((rc = step_done(st, s, "lease the task")) != 0)
    goto out;
  if (kind == STG_TASK_WORKFLOW) {
    s = stmt(st, SQL_START_EXEC);
    rc = UV_EIO;
    if (s == NULL)
      goto out;
    bind_text(s, 1, ex);
    sqlite3_bind_int64(s, 2, now);
    r = sqlite3_step(s);
    sqlite3_reset(s);
    if (r != SQLITE_ROW && r != SQLITE_DONE) {
      rc = db_err(st, "start the execution");
      goto out;
    }
    rc = 0;
    if (r == SQLITE_ROW && (rc = add_event(st, ex, now, "execution_started", NULL, NULL)) != 0)
      goto out;
    json_decref(payload);
    payload = NULL;
    if ((rc = workflow_payload(st, ex, &payload)) != 0)
      goto out;
  }
  rc = 0;
out:
  rc = end(st, rc);
  if (rc == 0 && id[0]) {
    *task = json_pack("{s:s, s:s, s:s, s:I, s:o}", "id", id, "kind", kind_name(kind),
                      "execution_id", ex, "lease_ms", (json_int_t)lease_ms, "payload",
                      payload ? payload : json_object());
    payload = NULL;
    snprintf(exec->s, sizeof exec->s, "%s", ex);
  }
  json_decref(payload);
  return rc;
}

static const char SQL_TASK[] =
    "SELECT t.kind, t.state, t.worker, t.lease_until, t.execution_id, e.state "
    "FROM tasks t JOIN executions e ON e.id = t.execution_id WHERE t.id = ?1";

typedef struct {
  char kind[16];
  char state[16];
  char worker[256];
  int64_t lease_until;
  char exec_id[32];
  char exec_state[16];
} task_row_t;

static int read_task(stg_store_t *st, const char *id, task_row_t *t) {
  sqlite3_stmt *s = stmt(st, SQL_TASK);
  if (s == NULL)
    return UV_EIO;
  bind_text(s, 1, id);
  int r = sqlite3_step(s);
  if (r == SQLITE_ROW) {
    snprintf(t->kind, sizeof t->kind, "%s", col_text(s, 0) ? col_text(s, 0) : "");
    snprintf(t->state, sizeof t->state, "%s", col_text(s, 1) ? col_text(s, 1) : "");
    snprintf(t->worker, sizeof t->worker, "%s", col_text(s, 2) ? col_text(s, 2) : "");
    t->lease_until = sqlite3_column_int64(s, 3);
    snprintf(t->exec_id, sizeof t->exec_id, "%s", col_text(s, 4) ? col_text(s, 4) : "");
    snprintf(t->exec_state, sizeof t->exec_state, "%s", col_text(s, 5) ? col_text(s, 5) : "");
  }
  sqlite3_reset(s);
  if (r == SQLITE_DONE)
    return set_err(st, UV_ENOENT, "no task %s", id);
  if (r != SQLITE_ROW)
    return db_err(st, "read the task");
  return 0;
}

/* The task, which must be leased to worker (and not lapsed). */
static int leased_task(stg_store_t *st, const char *id, const char *worker, int64_t now,
                       task_row_t *t) {
  int rc = read_task(st, id, t);
  if (rc != 0)
    return rc;
  if (strcmp(t->state, "leased") != 0)
    return set_err(st, UV_EBUSY, "task %s is not leased to worker '%.100s': it is %s", id,
                   worker, t->state);
  if (strcmp(t->worker, worker) != 0)
    return set_err(st, UV_EBUSY, "task %s is not leased to worker '%.100s': it is leased to "
                   "'%.100s'", id, worker, t->worker);
  if (t->lease_until <= now)
    return set_err(st, UV_EBUSY, "task %s: the lease of worker '%.100s' lapsed", id, worker);
  return 0;
}

static const char SQL_RENEW[] = "UPDATE tasks SET lease_until = ?2 WHERE id = ?1";

int stg_store_task_heartbeat(stg_store_t *st, const stg_store_lease_t *l, uint64_t lease_ms,
                             bool *cancelled) {
  const char *id = l->task_id, *worker = l->worker;
  int64_t now = stg_store_now();
  int rc = begin(st);
  if (rc != 0)
    return rc;
  task_row_t t;
  if ((rc = leased_task(st, id, worker, now, &t)) != 0)
    goto out;
  sqlite3_stmt *s = stmt(st, SQL_RENEW);
  rc = UV_EIO;
  if (s == NULL)
    goto out;
  bind_text(s, 1, id);
  sqlite3_bind_int64(s, 2, now + (int64_t)lease_ms);
  rc = step_done(st, s, "renew the lease");
  *cancelled = strcmp(t.exec_state, "cancelled") == 0;
out:
  return end(st, rc);
}

static const char SQL_STEP_GET[] =
    "SELECT state FROM steps WHERE execution_id = ?1 AND name = ?2";
static const char SQL_STEP_START[] =
    "UPDATE steps SET state = 'running', started_at = ?3, finished_at = NULL, "
    "exit_code = NULL, output = NULL WHERE execution_id = ?1 AND name = ?2";
static const char SQL_STEP_FINISH[] =
    "UPDATE steps SET state = ?3, finished_at = ?4, exit_code = ?5, output = ?6, "
    "started_at = coalesce(started_at, ?4) WHERE execution_id = ?1 AND name = ?2";

static bool one_of(const char *s, const char *const *set) {
  for (; *set; set++)
    if (strcmp(s, *set) == 0)
      return true;
  return false;
}

/* Applies one runner event E (already type-checked as an object). */
static int task_event(stg_store_t *st, const char *ex, int64_t now, unsigned i, json_t *e,
                      int64_t *seq) {
  const char *type = json_string_value(json_object_get(e, "type"));
  const char *step = json_string_value(json_object_get(e, "step"));
  if (type == NULL)
    return set_err(st, UV_EINVAL, "events[%u].type: expected a string", i);
  if (step == NULL)
    return set_err(st, UV_EINVAL, "events[%u].step: expected a string", i);
  sqlite3_stmt *s = stmt(st, SQL_STEP_GET);
  if (s == NULL)
    return UV_EIO;
  bind_text(s, 1, ex);
  bind_text(s, 2, step);
  char state[16] = "";
  int r = sqlite3_step(s);
  if (r == SQLITE_ROW)
    snprintf(state, sizeof state, "%s", col_text(s, 0) ? col_text(s, 0) : "");
  sqlite3_reset(s);
  if (r == SQLITE_DONE)
    return set_err(st, UV_EINVAL, "events[%u].step: no step '%.80s' in this workflow", i, step);
  if (r != SQLITE_ROW)
    return db_err(st, "read the step");

  if (strcmp(type, "step_started") == 0) {
    if (strcmp(state, "succeeded") == 0)
      return set_err(st, UV_EBUSY, "events[%u]: step '%s' already succeeded; a finished step "
                     "never runs twice", i, step);
    s = stmt(st, SQL_STEP_START);
    if (s == NULL)
      return UV_EIO;
    bind_text(s, 1, ex);
    bind_text(s, 2, step);
    sqlite3_bind_int64(s, 3, now);
    int rc = step_done(st, s, "start the step");
    if (rc != 0)
      return rc;
    return add_event_take(st, ex, now, type, json_pack("{s:s}", "step", step), seq);
  }
  if (strcmp(type, "output") == 0) {
    const char *stream = json_string_value(json_object_get(e, "stream"));
    json_t *line = json_object_get(e, "line");
    if (stream == NULL || (strcmp(stream, "out") != 0 && strcmp(stream, "err") != 0))
      return set_err(st, UV_EINVAL, "events[%u].stream: expected \"out\" or \"err\"", i);
    if (!json_is_string(line))
      return set_err(st, UV_EINVAL, "events[%u].line: expected a string", i);
    return add_event_take(st, ex, now, type,
                          json_pack("{s:s, s:s, s:O}", "step", step, "stream", stream, "line",
                                    line),
                          seq);
  }
  if (strcmp(type, "step_finished") == 0) {
    static const char *const states[] = {"succeeded", "failed", "cancelled", "skipped", NULL};
    const char *fs = json_string_value(json_object_get(e, "state"));
    json_t *code = json_object_get(e, "exit_code");
    json_t *output = json_object_get(e, "output");
    if (fs == NULL || !one_of(fs, states))
      return set_err(st, UV_EINVAL, "events[%u].state: expected succeeded, failed, "
                     "cancelled or skipped", i);
    if (code && !json_is_null(code) &&
        (!json_is_integer(code) || json_integer_value(code) < -1000 ||
         json_integer_value(code) > 1000))
      return set_err(st, UV_EINVAL, "events[%u].exit_code: expected an integer or null", i);
    if (output && !json_is_null(output) && !json_is_string(output))
      return set_err(st, UV_EINVAL, "events[%u].output: expected a string or null", i);
    if (strcmp(state, "succeeded") == 0)
      return set_err(st, UV_EBUSY, "events[%u]: step '%s' already succeeded", i, step);
    s = stmt(st, SQL_STEP_FINISH);
    if (s == NULL)
      return UV_EIO;
    bind_text(s, 1, ex);
    bind_text(s, 2, step);
    bind_text(s, 3, fs);
    sqlite3_bind_int64(s, 4, now);
    if (json_is_integer(code))
      sqlite3_bind_int64(s, 5, json_integer_value(code));
    else
      sqlite3_bind_null(s, 5);
    if (json_is_string(output))
      sqlite3_bind_text(s, 6, json_string_value(output), (int)json_string_length(output),
                        SQLITE_TRANSIENT);
    else
      sqlite3_bind_null(s, 6);
    int rc = step_done(st, s, "finish the step");
    if (rc != 0)
      return rc;
    return add_event_take(st, ex, now, type,
                          json_pack("{s:s, s:s, s:O}", "step", step, "state", fs, "exit_code",
                                    json_is_integer(code) ? code : json_null()),
                          seq);
  }
  return set_err(st, UV_EINVAL, "events[%u].type: expected step_started, output or "
                 "step_finished, not '%.40s'", i, type);
}

static const char SQL_LAST_SEQ[] = "SELECT last_seq FROM executions WHERE id = ?1";

int stg_store_task_events(stg_store_t *st, const stg_store_lease_t *l, const json_t *events,
                          stg_store_appended_t *out) {
  const char *id = l->task_id, *worker = l->worker;
  int64_t now = stg_store_now();
  if (!json_is_array(events))
    return set_err(st, UV_EINVAL, "events: expected an array");
  int rc = begin(st);
  if (rc != 0)
    return rc;
  task_row_t t;
  if ((rc = leased_task(st, id, worker, now, &t)) != 0)
    goto out;
  if (strcmp(t.kind, "workflow") != 0) {
    rc = set_err(st, UV_EINVAL, "task %s is an agent task; events belong to workflow tasks", id);
    goto out;
  }
  snprintf(out->exec.s, sizeof out->exec.s, "%s", t.exec_id);
  int64_t seq = 0;
  size_t i;
  json_t *e;
  json_array_foreach(events, i, e) {
    if (!json_is_object(e)) {
      rc = set_err(st, UV_EINVAL, "events[%zu]: expected an object", i);
      goto out;
    }
    if ((rc = task_event(st, t.exec_id, now, (unsigned)i, e, &seq)) != 0)
      goto out;
  }
  if (seq == 0) {
    sqlite3_stmt *s = stmt(st, SQL_LAST_SEQ);
    if (s != NULL) {
      bind_text(s, 1, t.exec_id);
      if (sqlite3_step(s) == SQLITE_ROW)
        seq = sqlite3_column_int64(s, 0);
      sqlite3_reset(s);
    }
  }
  out->next = seq;
out:
  return end(st, rc);
}

static const char SQL_TASK_FINISH[] =
    "UPDATE tasks SET state = ?2, error = ?3, output = ?4, finished_at = ?5, "
    "lease_until = NULL WHERE id = ?1";

int stg_store_task_complete(stg_store_t *st, const stg_store_lease_t *l,
                            const stg_store_result_t *r, stg_store_id_t *exec) {
  const char *id = l->task_id, *worker = l->worker;
  const char *state = r->state, *error = r->error, *output = r->output;
  int64_t now = stg_store_now();
  if (strcmp(state, "succeeded") != 0 && strcmp(state, "failed") != 0)
    return set_err(st, UV_EINVAL, "state: expected \"succeeded\" or \"failed\"");
  int rc = begin(st);
  if (rc != 0)
    return rc;
  task_row_t t;
  if ((rc = leased_task(st, id, worker, now, &t)) != 0)
    goto out;
  snprintf(exec->s, sizeof exec->s, "%s", t.exec_id);
  sqlite3_stmt *s = stmt(st, SQL_TASK_FINISH);
  rc = UV_EIO;
  if (s == NULL)
    goto out;
  bind_text(s, 1, id);
  bind_text(s, 2, state);
  bind_text(s, 3, error);
  bind_text(s, 4, output);
  sqlite3_bind_int64(s, 5, now);
  if ((rc = step_done(st, s, "finish the task")) != 0)
    goto out;
  if (strcmp(t.kind, "workflow") == 0 && !finished_state(t.exec_state)) {
    rc = finish_exec(st, t.exec_id, now, state, error, "skipped");
    if (rc != 0)
      goto out;
    /* an agent task still pending for it has no one to wait for it */
    s = stmt(st, SQL_CANCEL_TASKS);
    rc = UV_EIO;
    if (s == NULL)
      goto out;
    bind_text(s, 1, t.exec_id);
    sqlite3_bind_int64(s, 2, now);
    rc = step_done(st, s, "cancel the tasks left");
  }
out:
  return end(st, rc);
}

static const char SQL_UNLEASE[] =
    "UPDATE tasks SET state = CASE WHEN (SELECT state FROM executions e "
    "WHERE e.id = tasks.execution_id) IN ('succeeded', 'failed', 'cancelled') "
    "THEN 'cancelled' ELSE 'pending' END, worker = NULL, lease_until = NULL WHERE id = ?1";

int stg_store_task_release(stg_store_t *st, const stg_store_lease_t *l, stg_task_kind_t *kind) {
  const char *id = l->task_id, *worker = l->worker;
  int64_t now = stg_store_now();
  int rc = begin(st);
  if (rc != 0)
    return rc;
  task_row_t t;
  if ((rc = leased_task(st, id, worker, now, &t)) != 0)
    goto out;
  *kind = strcmp(t.kind, "workflow") == 0 ? STG_TASK_WORKFLOW : STG_TASK_AGENT;
  sqlite3_stmt *s = stmt(st, SQL_UNLEASE);
  rc = UV_EIO;
  if (s == NULL)
    goto out;
  bind_text(s, 1, id);
  rc = step_done(st, s, "release the task");
out:
  return end(st, rc);
}

static const char SQL_STEP_KIND[] =
    "SELECT kind FROM steps WHERE execution_id = ?1 AND name = ?2";

int stg_store_task_create_agent(stg_store_t *st, const stg_store_agent_task_t *o,
                                stg_store_id_t *tid) {
  char *id = tid->s;
  int64_t now = stg_store_now();
  int rc = begin(st);
  if (rc != 0)
    return rc;
  char state[32];
  json_t *payload = NULL;
  char *text = NULL;
  if ((rc = exec_state(st, o->execution_id, state, sizeof state)) != 0) {
    if (rc == UV_ENOENT)
      rc = set_err(st, UV_EINVAL, "execution_id: no execution %.40s", o->execution_id);
    goto out;
  }
  if (finished_state(state)) {
    rc = set_err(st, UV_EBUSY, "execution %s already finished (%s)", o->execution_id, state);
    goto out;
  }
  sqlite3_stmt *s = stmt(st, SQL_STEP_KIND);
  rc = UV_EIO;
  if (s == NULL)
    goto out;
  bind_text(s, 1, o->execution_id);
  bind_text(s, 2, o->step);
  int r = sqlite3_step(s);
  bool agent = r == SQLITE_ROW && col_text(s, 0) && strcmp(col_text(s, 0), "agent") == 0;
  sqlite3_reset(s);
  if (r != SQLITE_ROW && r != SQLITE_DONE) {
    rc = db_err(st, "read the step");
    goto out;
  }
  if (!agent) {
    rc = set_err(st, UV_EINVAL, "step: '%.80s' is not an agent step of %s", o->step,
                 o->execution_id);
    goto out;
  }
  payload = json_pack("{s:s, s:s, s:s, s:I}", "step", o->step, "prompt", o->prompt, "model",
                      o->model ? o->model : "", "timeout_ms", (json_int_t)o->timeout_ms);
  text = payload ? json_dumps(payload, JSON_COMPACT) : NULL;
  if (text == NULL) {
    rc = set_err(st, UV_ENOMEM, "out of memory");
    goto out;
  }
  make_id("tk_", id, sizeof tid->s);
  s = stmt(st, SQL_ADD_TASK);
  rc = UV_EIO;
  if (s == NULL)
    goto out;
  bind_text(s, 1, id);
  bind_text(s, 2, "agent");
  bind_text(s, 3, o->execution_id);
  bind_text(s, 4, o->step);
  bind_text(s, 5, text);
  sqlite3_bind_int64(s, 6, now);
  rc = step_done(st, s, "record the agent task");
out:
  json_decref(payload);
  free(text);
  return end(st, rc);
}

static const char SQL_TASK_GET[] =
    "SELECT id, kind, state, output, error FROM tasks WHERE id = ?1";

int stg_store_task_get(stg_store_t *st, const char *id, json_t **out, bool *final) {
  sqlite3_stmt *s = stmt(st, SQL_TASK_GET);
  if (s == NULL)
    return UV_EIO;
  bind_text(s, 1, id);
  int r = sqlite3_step(s);
  if (r == SQLITE_ROW) {
    *out = json_pack("{s:o, s:o, s:o, s:o, s:o}", "id", json_text(s, 0), "kind",
                     json_text(s, 1), "state", json_text(s, 2), "output", json_text(s, 3),
                     "error", json_text(s, 4));
    *final = finished_state(col_text(s, 2) ? col_text(s, 2) : "");
  }
  sqlite3_reset(s);
  if (r == SQLITE_DONE)
    return set_err(st, UV_ENOENT, "no task %s", id);
  if (r != SQLITE_ROW)
    return db_err(st, "read the task");
  return 0;
}

static const char SQL_LAPSED[] =
    "SELECT id, kind FROM tasks WHERE state = 'leased' AND lease_until <= ?1";

int stg_store_expire_leases(stg_store_t *st, unsigned *kinds) {
  int64_t now = stg_store_now();
  *kinds = 0;
  int rc = begin(st);
  if (rc != 0)
    return rc;
  sqlite3_stmt *s = stmt(st, SQL_LAPSED);
  rc = UV_EIO;
  if (s == NULL)
    goto out;
  sqlite3_bind_int64(s, 1, now);
  char ids[64][32];
  unsigned n = 0;
  int r;
  while (n < 64 && (r = sqlite3_step(s)) == SQLITE_ROW) {
    snprintf(ids[n++], 32, "%s", col_text(s, 0));
    *kinds |= 1u << (strcmp(col_text(s, 1), "workflow") == 0 ? STG_TASK_WORKFLOW
                                                              : STG_TASK_AGENT);
  }
  sqlite3_reset(s);
  rc = 0;
  for (unsigned i = 0; i < n && rc == 0; i++) {
    s = stmt(st, SQL_UNLEASE);
    rc = UV_EIO;
    if (s == NULL)
      break;
    bind_text(s, 1, ids[i]);
    rc = step_done(st, s, "put a lapsed task back");
  }
out:
  rc = end(st, rc);
  /* more than 64 at once: the next call takes the rest */
  return rc;
}

static const char SQL_NEXT_EXPIRY[] =
    "SELECT min(lease_until) FROM tasks WHERE state = 'leased'";

int stg_store_next_expiry(stg_store_t *st, int64_t *at) {
  sqlite3_stmt *s = stmt(st, SQL_NEXT_EXPIRY);
  if (s == NULL)
    return UV_EIO;
  int r = sqlite3_step(s);
  *at = -1;
  if (r == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
    *at = sqlite3_column_int64(s, 0);
  sqlite3_reset(s);
  if (r != SQLITE_ROW)
    return db_err(st, "find the next lease expiry");
  return 0;
}
