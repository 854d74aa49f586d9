#include "ctlproto.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "config.h"

static int fail(const char **code, const char *c, char *err, size_t errlen,
                const char *msg) {
  *code = c;
  snprintf(err, errlen, "%s", msg);
  return UV_EINVAL;
}

static bool known(const char *name, bool allow_supervisor) {
  if (stg_component_lookup(name) >= 0)
    return true;
  return allow_supervisor && strcmp(name, "supervisor") == 0;
}

int stg_ctlproto_parse(const char *line, size_t len, stg_ctl_request_t *out,
                       const char **code, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  out->timeout_ms = 60000;
  out->tail = 100;
  if (len > STG_CTL_MAX_LINE)
    return fail(code, "too_long", err, errlen, "request line over 64 KiB");
  json_error_t jerr;
  json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
  if (req == NULL) {
    char msg[300];
    snprintf(msg, sizeof msg, "malformed JSON at column %d: %s", jerr.column, jerr.text);
    return fail(code, "bad_request", err, errlen, msg);
  }
  int rc = 0;
  if (!json_is_object(req)) {
    rc = fail(code, "bad_request", err, errlen, "expected a JSON object");
    goto out;
  }
  const char *cmd = json_string_value(json_object_get(req, "cmd"));
  if (cmd == NULL) {
    rc = fail(code, "bad_request", err, errlen,
              "missing \"cmd\" (status, stop, restart, logs, wait)");
  } else if (strcmp(cmd, "status") == 0) {
    out->cmd = STG_CTL_STATUS;
  } else if (strcmp(cmd, "stop") == 0) {
    out->cmd = STG_CTL_STOP;
  } else if (strcmp(cmd, "restart") == 0) {
    out->cmd = STG_CTL_RESTART;
    json_t *c = json_object_get(req, "component");
    if (c != NULL && !json_is_string(c)) {
      rc = fail(code, "bad_request", err, errlen, "restart: component is a name");
    } else if (c != NULL && strcmp(json_string_value(c), "all") != 0) {
      const char *name = json_string_value(c);
      if (!known(name, false) || strlen(name) >= sizeof out->component) {
        char msg[200];
        snprintf(msg, sizeof msg, "unknown component '%.64s' (server, workflow-runner, "
                 "agent-runner)", name);
        rc = fail(code, "unknown_component", err, errlen, msg);
      } else {
        snprintf(out->component, sizeof out->component, "%s", name);
      }
    }
  } else if (strcmp(cmd, "wait") == 0) {
    out->cmd = STG_CTL_WAIT;
    json_t *t = json_object_get(req, "timeout_ms");
    json_t *pr = json_object_get(req, "progress");
    if (t != NULL && !json_is_integer(t))
      rc = fail(code, "bad_request", err, errlen, "wait: timeout_ms is a number");
    else if (pr != NULL && !json_is_boolean(pr))
      rc = fail(code, "bad_request", err, errlen, "wait: progress is a boolean");
    else {
      if (t != NULL)
        out->timeout_ms = json_integer_value(t) < 0 ? 0 : json_integer_value(t);
      out->progress = json_is_true(pr);
    }
  } else if (strcmp(cmd, "logs") == 0) {
    out->cmd = STG_CTL_LOGS;
    json_t *tail = json_object_get(req, "tail");
    json_t *follow = json_object_get(req, "follow");
    json_t *comps = json_object_get(req, "components");
    if ((tail && !json_is_integer(tail)) || (follow && !json_is_boolean(follow)) ||
        (comps && !json_is_array(comps))) {
      rc = fail(code, "bad_request", err, errlen, "logs: tail is a number, follow a "
                "boolean, components an array of names");
      goto out;
    }
    if (tail && json_integer_value(tail) < 0) {
      rc = fail(code, "bad_request", err, errlen, "logs: tail must not be negative");
      goto out;
    }
    if (tail)
      out->tail = (uint64_t)json_integer_value(tail);
    out->follow = follow ? json_is_true(follow) : false;
    size_t i;
    json_t *v;
    json_array_foreach(comps, i, v) {
      const char *name = json_string_value(v);
      if (name == NULL || !known(name, true)) {
        rc = fail(code, "unknown_component", err, errlen, "logs: unknown component");
        goto out;
      }
      if (out->n_components == STG_CTL_MAX_COMPONENTS) {
        rc = fail(code, "bad_request", err, errlen, "logs: too many components");
        goto out;
      }
      snprintf(out->components[out->n_components++], sizeof out->components[0], "%s",
               name);
    }
  } else {
    char msg[200];
    snprintf(msg, sizeof msg, "unknown cmd '%.64s' (status, stop, restart, logs, wait)", cmd);
    rc = fail(code, "bad_request", err, errlen, msg);
  }
out:
  json_decref(req);
  return rc;
}
