/* Workflow files, read with inih through a reader that counts lines.
 *
 * Debian's inih has no line numbers in the handler, cuts lines at 200
 * characters, truncates section and key names at 50 and never calls the
 * handler for an empty section. So the reader does the bookkeeping: it
 * numbers lines, refuses over-long lines and NUL bytes, and sees section
 * headers itself (a step with no keys is still a step); the handler takes
 * the full key name from the raw line. inih handles comments and
 * continuation lines (INI_ALLOW_MULTILINE), which we join with "\n".
 */
#include "workflow.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>
#include <uv.h>

#include "parse.h"

typedef enum { SEC_NONE, SEC_WORKFLOW, SEC_STEP, SEC_BAD } sec_kind_t;

/* What parsing collects for a step beyond the public fields. */
typedef struct {
  char *timeout;     /* raw, checked at the end */
  int timeout_line;
  int agent_line;
  int run_line;
  int model_line;
  int cwd_line;
  int env_line;      /* first env.* */
} step_extra_t;

typedef struct {
  const char *text;
  size_t len;
  size_t pos;
  const char *display;
  stg_workflow_t *wf;
  step_extra_t *extra;      /* parallel to wf->steps */
  unsigned steps_cap;
  int line;                 /* the line being parsed */
  bool indented;            /* it starts with whitespace */
  bool have_prev;           /* inih has a previous key (continuations) */
  char raw[256];            /* the line as read */
  sec_kind_t sec;
  unsigned step;            /* index when sec == SEC_STEP */
  int workflow_line;        /* line of [workflow], 0 if none */
  int name_line;
  char **last;              /* the value a continuation line extends */
  int rc;
  int err_line;
  char *err;
  size_t errlen;
} ctx_t;

/* Records the first error only; line 0 means "no line". */
static void fail(ctx_t *c, int line, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(ctx_t *c, int line, int rc, const char *fmt, ...) {
  if (c->rc != 0)
    return;
  c->rc = rc;
  c->err_line = line;
  if (c->errlen == 0)
    return;
  int n;
  if (line > 0)
    n = snprintf(c->err, c->errlen, "%s:%d: ", c->display, line);
  else
    n = snprintf(c->err, c->errlen, "%s: ", c->display);
  if (n < 0 || (size_t)n >= c->errlen)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
  va_end(ap);
}

bool stg_workflow_name_ok(const char *name) {
  size_t n = 0;
  for (const char *p = name; *p; p++, n++) {
    if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
      return false;
    if ((unsigned char)*p > 127)
      return false;
  }
  return n >= 1 && n <= STG_WORKFLOW_MAX_NAME;
}

static bool env_key_ok(const char *name) {
  if (!(isalpha((unsigned char)*name) || *name == '_'))
    return false;
  size_t n = 0;
  for (const char *p = name; *p; p++, n++)
    if (!(isalnum((unsigned char)*p) || *p == '_') || (unsigned char)*p > 127)
      return false;
  return n <= 128;
}

static int env_name(const char *prefix, const char *name, const char *suffix, char *buf,
                    size_t len) {
  size_t np = strlen(prefix), nn = strlen(name), ns = strlen(suffix);
  if (np + nn + ns + 1 > len)
    return UV_ENOBUFS;
  memcpy(buf, prefix, np);
  for (size_t i = 0; i < nn; i++) {
    unsigned char ch = (unsigned char)toupper((unsigned char)name[i]);
    buf[np + i] = ((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) ? (char)ch : '_';
  }
  memcpy(buf + np + nn, suffix, ns + 1);
  return 0;
}

int stg_workflow_input_env(const char *input, char *buf, size_t len) {
  return env_name("STIGMER_INPUT_", input, "", buf, len);
}

int stg_workflow_output_env(const char *step, char *buf, size_t len) {
  return env_name("STIGMER_STEP_", step, "_OUTPUT", buf, len);
}

/* --- the reader -------------------------------------------------------------------- */

static void start_section(ctx_t *c, const char *s, size_t n) {
  while (n > 0 && isspace((unsigned char)*s))
    s++, n--;
  while (n > 0 && isspace((unsigned char)s[n - 1]))
    n--;
  c->have_prev = false;
  c->last = NULL;
  c->sec = SEC_BAD;
  if (n == 8 && memcmp(s, "workflow", 8) == 0) {
    if (c->workflow_line) {
      fail(c, c->line, UV_EINVAL, "a second [workflow] section (the first is on line %d)",
           c->workflow_line);
      return;
    }
    c->workflow_line = c->line;
    c->sec = SEC_WORKFLOW;
    return;
  }
  if (n > 5 && memcmp(s, "step", 4) == 0 && isspace((unsigned char)s[4])) {
    const char *name = s + 5;
    size_t nn = n - 5;
    while (nn > 0 && isspace((unsigned char)*name))
      name++, nn--;
    char buf[STG_WORKFLOW_MAX_NAME + 1];
    if (nn > STG_WORKFLOW_MAX_NAME) {
      fail(c, c->line, UV_EINVAL, "step name longer than %d characters",
           STG_WORKFLOW_MAX_NAME);
      return;
    }
    memcpy(buf, name, nn);
    buf[nn] = '\0';
    if (!stg_workflow_name_ok(buf)) {
      fail(c, c->line, UV_EINVAL, "[step %s]: a step name is 1 to %d of A-Z a-z 0-9 _ -",
           buf, STG_WORKFLOW_MAX_NAME);
      return;
    }
    int prev = stg_workflow_step_index(c->wf, buf);
    if (prev >= 0) {
      fail(c, c->line, UV_EINVAL, "duplicate step name '%s' (first on line %d)", buf,
           c->wf->steps[prev].line);
      return;
    }
    if (c->wf->n_steps >= STG_WORKFLOW_MAX_STEPS) {
      fail(c, c->line, UV_EINVAL, "more than %d steps", STG_WORKFLOW_MAX_STEPS);
      return;
    }
    if (c->wf->n_steps == c->steps_cap) {
      unsigned cap = c->steps_cap ? c->steps_cap * 2 : 8;
      stg_workflow_step_t *ns = realloc(c->wf->steps, cap * sizeof *ns);
      if (ns == NULL) {
        fail(c, 0, UV_ENOMEM, "out of memory");
        return;
      }
      c->wf->steps = ns;
      step_extra_t *ne = realloc(c->extra, cap * sizeof *ne);
      if (ne == NULL) {
        fail(c, 0, UV_ENOMEM, "out of memory");
        return;
      }
      c->extra = ne;
      c->steps_cap = cap;
    }
    stg_workflow_step_t *st = &c->wf->steps[c->wf->n_steps];
    memset(st, 0, sizeof *st);
    memset(&c->extra[c->wf->n_steps], 0, sizeof c->extra[0]);
    st->name = strdup(buf);
    if (st->name == NULL) {
      fail(c, 0, UV_ENOMEM, "out of memory");
      return;
    }
    st->line = c->line;
    c->step = c->wf->n_steps++;
    c->sec = SEC_STEP;
    return;
  }
  fail(c, c->line, UV_EINVAL, "unknown section [%.*s] (expected [workflow] or [step NAME])",
       (int)(n > 80 ? 80 : n), s);
}

static char *read_line(char *str, int num, void *stream) {
  ctx_t *c = stream;
  if (c->pos >= c->len)
    return NULL;
  const char *p = c->text + c->pos;
  size_t rest = c->len - c->pos;
  const char *nl = memchr(p, '\n', rest);
  size_t n = nl ? (size_t)(nl - p) + 1 : rest;
  c->pos += n;
  c->line++;
  if (memchr(p, '\0', n) != NULL) {
    fail(c, c->line, UV_EINVAL, "a NUL byte in the text");
    n = 0;
  }
  size_t body = n;
  if (body > 0 && p[body - 1] == '\n')
    body--;
  if (body > 0 && p[body - 1] == '\r')
    body--;
  if (body + 2 > (size_t)num || body + 1 > sizeof c->raw) {
    fail(c, c->line, UV_EINVAL, "line longer than %d characters (continue a long value "
         "on indented lines)", num - 2);
    body = 0;
  }
  memcpy(str, p, body);
  str[body] = '\n';
  str[body + 1] = '\0';
  memcpy(c->raw, p, body);
  c->raw[body] = '\0';

  c->indented = body > 0 && (c->raw[0] == ' ' || c->raw[0] == '\t');
  const char *s = c->raw;
  while (isspace((unsigned char)*s))
    s++;
  /* inih: a comment, else a continuation when indented after a key, else
   * a section header */
  if (*s == ';' || *s == '#' || *s == '\0')
    return str;
  if (c->indented && c->have_prev)
    return str;
  if (*s == '[') {
    const char *end = strchr(s + 1, ']');
    if (end != NULL)
      start_section(c, s + 1, (size_t)(end - s - 1));
  }
  return str;
}

/* --- the handler ------------------------------------------------------------------- */

static int set_value(ctx_t *c, char **slot, int *line_slot, const char *what,
                     const char *value) {
  if (*slot != NULL) {
    fail(c, c->line, UV_EINVAL, "%s given twice", what);
    return 0;
  }
  *slot = strdup(value);
  if (*slot == NULL) {
    fail(c, 0, UV_ENOMEM, "out of memory");
    return 0;
  }
  if (line_slot)
    *line_slot = c->line;
  c->last = slot;
  return 1;
}

static void workflow_key(ctx_t *c, const char *key, const char *value) {
  stg_workflow_t *wf = c->wf;
  if (strcmp(key, "name") == 0) {
    if (set_value(c, &wf->name, &c->name_line, "[workflow] name", value))
      return;
    return;
  }
  if (strcmp(key, "description") == 0) {
    set_value(c, &wf->description, NULL, "[workflow] description", value);
    return;
  }
  if (strncmp(key, "input.", 6) == 0) {
    const char *in = key + 6;
    if (!stg_workflow_name_ok(in)) {
      fail(c, c->line, UV_EINVAL, "[workflow] %.80s: an input name is 1 to %d of "
           "A-Z a-z 0-9 _ -", key, STG_WORKFLOW_MAX_NAME);
      return;
    }
    const stg_workflow_input_t *prev = stg_workflow_input(wf, in);
    if (prev) {
      fail(c, c->line, UV_EINVAL, "duplicate input '%s' (first on line %d)", in, prev->line);
      return;
    }
    if (wf->n_inputs >= STG_WORKFLOW_MAX_INPUTS) {
      fail(c, c->line, UV_EINVAL, "more than %d inputs", STG_WORKFLOW_MAX_INPUTS);
      return;
    }
    stg_workflow_input_t *ni = realloc(wf->inputs, (wf->n_inputs + 1) * sizeof *ni);
    if (ni == NULL) {
      fail(c, 0, UV_ENOMEM, "out of memory");
      return;
    }
    wf->inputs = ni;
    stg_workflow_input_t *i = &wf->inputs[wf->n_inputs];
    memset(i, 0, sizeof *i);
    i->name = strdup(in);
    i->line = c->line;
    if (i->name == NULL) {
      fail(c, 0, UV_ENOMEM, "out of memory");
      return;
    }
    wf->n_inputs++;
    if (*value != '\0') {
      set_value(c, &i->default_value, NULL, "default", value);
    } else {
      /* required; a continuation line would give it a value after all */
      c->last = &i->default_value;
    }
    return;
  }
  fail(c, c->line, UV_EINVAL, "[workflow]: unknown key '%.80s' (expected name, description "
       "or input.NAME)", key);
}

static void step_key(ctx_t *c, const char *key, const char *value) {
  stg_workflow_step_t *st = &c->wf->steps[c->step];
  step_extra_t *x = &c->extra[c->step];
  char what[128];
  snprintf(what, sizeof what, "[step %s] %.50s", st->name, key);
  if (strcmp(key, "run") == 0) {
    set_value(c, &st->run, &x->run_line, what, value);
  } else if (strcmp(key, "agent") == 0) {
    set_value(c, &st->agent, &x->agent_line, what, value);
  } else if (strcmp(key, "model") == 0) {
    set_value(c, &st->model, &x->model_line, what, value);
  } else if (strcmp(key, "cwd") == 0) {
    set_value(c, &st->cwd, &x->cwd_line, what, value);
  } else if (strcmp(key, "timeout") == 0) {
    set_value(c, &x->timeout, &x->timeout_line, what, value);
  } else if (strncmp(key, "env.", 4) == 0) {
    const char *en = key + 4;
    if (!env_key_ok(en)) {
      fail(c, c->line, UV_EINVAL, "%s: an environment variable name is a letter or _ "
           "followed by letters, digits or _", what);
      return;
    }
    for (unsigned i = 0; i < st->n_env; i++) {
      if (strcmp(st->env[i].name, en) == 0) {
        fail(c, c->line, UV_EINVAL, "%s given twice", what);
        return;
      }
    }
    if (st->n_env >= STG_WORKFLOW_MAX_ENV) {
      fail(c, c->line, UV_EINVAL, "[step %s]: more than %d env.* keys", st->name,
           STG_WORKFLOW_MAX_ENV);
      return;
    }
    stg_workflow_env_t *ne = realloc(st->env, (st->n_env + 1) * sizeof *ne);
    if (ne == NULL) {
      fail(c, 0, UV_ENOMEM, "out of memory");
      return;
    }
    st->env = ne;
    stg_workflow_env_t *e = &st->env[st->n_env];
    e->name = strdup(en);
    e->value = NULL;
    if (e->name == NULL) {
      fail(c, 0, UV_ENOMEM, "out of memory");
      return;
    }
    st->n_env++;
    if (x->env_line == 0)
      x->env_line = c->line;
    set_value(c, &e->value, NULL, what, value);
  } else {
    fail(c, c->line, UV_EINVAL, "[step %s]: unknown key '%.80s' (expected run, agent, "
         "model, timeout, cwd or env.NAME)", st->name, key);
  }
}

static int on_value(void *user, const char *section, const char *name, const char *value) {
  (void)section;
  (void)name;
  ctx_t *c = user;
  if (c->rc != 0)
    return 1;
  if (c->indented && c->have_prev) {
    /* a continuation line */
    if (c->last == NULL)
      return 1; /* continues a key that was refused */
    size_t old = *c->last ? strlen(*c->last) : 0, add = strlen(value);
    char *nv = malloc(old + add + 2);
    if (nv == NULL) {
      fail(c, 0, UV_ENOMEM, "out of memory");
      return 0;
    }
    size_t at = 0;
    if (*c->last) {
      memcpy(nv, *c->last, old);
      nv[old] = '\n';
      at = old + 1;
    }
    memcpy(nv + at, value, add + 1);
    free(*c->last);
    *c->last = nv;
    return 1;
  }
  c->have_prev = true;
  c->last = NULL;
  /* the full key from the raw line (inih truncates it at 50) */
  const char *s = c->raw;
  while (isspace((unsigned char)*s))
    s++;
  size_t n = strcspn(s, "=:");
  while (n > 0 && isspace((unsigned char)s[n - 1]))
    n--;
  char key[sizeof c->raw];
  memcpy(key, s, n);
  key[n] = '\0';
  switch (c->sec) {
  case SEC_NONE:
    fail(c, c->line, UV_EINVAL, "'%.80s' outside any section (start with [workflow])", key);
    break;
  case SEC_WORKFLOW:
    workflow_key(c, key, value);
    break;
  case SEC_STEP:
    step_key(c, key, value);
    break;
  case SEC_BAD:
    break; /* the section was refused already */
  }
  return 1;
}

/* --- templates --------------------------------------------------------------------- */

/* Scans one reference starting at p ("{{"). On success sets *end past the
 * "}}", *is_step and the name (in buf). Returns 0, 1 when p does not start
 * a closed "{{...}}" (literal text), or -1 for a malformed reference. */
static int scan_ref(const char *p, const char **end, bool *is_step, char *buf, size_t len) {
  const char *close = strstr(p + 2, "}}");
  if (close == NULL)
    return 1;
  const char *s = p + 2, *e = close;
  while (s < e && isspace((unsigned char)*s))
    s++;
  while (e > s && isspace((unsigned char)e[-1]))
    e--;
  size_t n = (size_t)(e - s);
  const char *name;
  size_t nn;
  if (n > 6 && memcmp(s, "input.", 6) == 0) {
    *is_step = false;
    name = s + 6;
    nn = n - 6;
  } else if (n > 13 && memcmp(s, "steps.", 6) == 0 && memcmp(e - 7, ".output", 7) == 0) {
    *is_step = true;
    name = s + 6;
    nn = n - 13;
  } else {
    snprintf(buf, len, "%.*s", (int)(n > 80 ? 80 : n), s);
    return -1;
  }
  if (nn == 0 || nn >= len || nn > STG_WORKFLOW_MAX_NAME) {
    snprintf(buf, len, "%.*s", (int)(n > 80 ? 80 : n), s);
    return -1;
  }
  memcpy(buf, name, nn);
  buf[nn] = '\0';
  if (!stg_workflow_name_ok(buf)) {
    snprintf(buf, len, "%.*s", (int)(n > 80 ? 80 : n), s);
    return -1;
  }
  *end = close + 2;
  return 0;
}

/* Every reference of a prompt must name an input or an earlier step. */
static void check_template(ctx_t *c, unsigned si) {
  const stg_workflow_step_t *st = &c->wf->steps[si];
  int line = c->extra[si].agent_line;
  for (const char *p = strstr(st->agent, "{{"); p != NULL; p = strstr(p, "{{")) {
    const char *end;
    bool is_step;
    char name[96];
    int r = scan_ref(p, &end, &is_step, name, sizeof name);
    if (r == 1)
      return;
    if (r < 0) {
      fail(c, line, UV_EINVAL, "[step %s] agent: unknown reference {{%s}} (expected "
           "{{input.NAME}} or {{steps.NAME.output}})", st->name, name);
      return;
    }
    if (!is_step && stg_workflow_input(c->wf, name) == NULL) {
      fail(c, line, UV_EINVAL, "[step %s] agent: {{input.%s}}: no such input", st->name,
           name);
      return;
    }
    if (is_step) {
      int idx = stg_workflow_step_index(c->wf, name);
      if (idx < 0) {
        fail(c, line, UV_EINVAL, "[step %s] agent: {{steps.%s.output}}: no such step",
             st->name, name);
        return;
      }
      if ((unsigned)idx >= si) {
        fail(c, line, UV_EINVAL, "[step %s] agent: {{steps.%s.output}}: that step runs "
             "%s, so its output is not known yet", st->name, name,
             (unsigned)idx == si ? "now" : "later");
        return;
      }
    }
    p = end;
  }
}

typedef struct {
  char *buf;
  size_t len, cap;
} sbuf_t;

static int sbuf_add(sbuf_t *b, const char *s, size_t n) {
  if (b->len + n + 1 > STG_WORKFLOW_MAX_PROMPT)
    return UV_E2BIG;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *nb = realloc(b->buf, cap);
    if (nb == NULL)
      return UV_ENOMEM;
    b->buf = nb;
    b->cap = cap;
  }
  memcpy(b->buf + b->len, s, n);
  b->len += n;
  b->buf[b->len] = '\0';
  return 0;
}

int stg_workflow_render(const char *tmpl, stg_workflow_lookup_fn lookup, void *data,
                        char **out) {
  sbuf_t b = {NULL, 0, 0};
  int rc = sbuf_add(&b, "", 0);
  const char *p = tmpl;
  while (rc == 0) {
    const char *q = strstr(p, "{{");
    if (q == NULL) {
      rc = sbuf_add(&b, p, strlen(p));
      break;
    }
    rc = sbuf_add(&b, p, (size_t)(q - p));
    if (rc != 0)
      break;
    const char *end;
    bool is_step;
    char name[96];
    int r = scan_ref(q, &end, &is_step, name, sizeof name);
    if (r == 1) {
      rc = sbuf_add(&b, q, strlen(q));
      break;
    }
    if (r < 0) {
      rc = UV_EINVAL;
      break;
    }
    const char *v = lookup ? lookup(data, is_step, name) : NULL;
    if (v != NULL) {
      size_t vn = strlen(v);
      rc = sbuf_add(&b, v, vn > STG_WORKFLOW_MAX_VALUE ? STG_WORKFLOW_MAX_VALUE : vn);
    }
    p = end;
  }
  if (rc != 0) {
    free(b.buf);
    return rc;
  }
  *out = b.buf;
  return 0;
}

/* --- checks at the end --------------------------------------------------------------- */

static void check_all(ctx_t *c) {
  stg_workflow_t *wf = c->wf;
  if (c->workflow_line == 0) {
    fail(c, 0, UV_EINVAL, "no [workflow] section");
    return;
  }
  if (wf->name == NULL || wf->name[0] == '\0') {
    fail(c, c->workflow_line, UV_EINVAL, "[workflow] name is required");
    return;
  }
  size_t nl = strlen(wf->name);
  for (const char *p = wf->name; *p; p++) {
    if ((unsigned char)*p < 0x20 || *p == 0x7f) {
      fail(c, c->name_line, UV_EINVAL, "[workflow] name: one line of text, no control "
           "characters");
      return;
    }
  }
  if (nl > 128) {
    fail(c, c->name_line, UV_EINVAL, "[workflow] name: longer than 128 characters");
    return;
  }
  if (wf->n_steps == 0) {
    fail(c, c->workflow_line, UV_EINVAL, "no steps (add a [step NAME] section)");
    return;
  }
  char a[160], b[160];
  for (unsigned i = 0; i < wf->n_inputs; i++) {
    stg_workflow_input_env(wf->inputs[i].name, a, sizeof a);
    for (unsigned j = 0; j < i; j++) {
      stg_workflow_input_env(wf->inputs[j].name, b, sizeof b);
      if (strcmp(a, b) == 0) {
        fail(c, wf->inputs[i].line, UV_EINVAL, "inputs '%s' and '%s' would both be $%s",
             wf->inputs[j].name, wf->inputs[i].name, a);
        return;
      }
    }
  }
  for (unsigned i = 0; i < wf->n_steps; i++) {
    stg_workflow_step_t *st = &wf->steps[i];
    step_extra_t *x = &c->extra[i];
    stg_workflow_output_env(st->name, a, sizeof a);
    for (unsigned j = 0; j < i; j++) {
      stg_workflow_output_env(wf->steps[j].name, b, sizeof b);
      if (strcmp(a, b) == 0) {
        fail(c, st->line, UV_EINVAL, "steps '%s' and '%s' would both be $%s",
             wf->steps[j].name, st->name, a);
        return;
      }
    }
    if (st->run && st->agent) {
      fail(c, st->line, UV_EINVAL, "[step %s] has both run (line %d) and agent (line %d); "
           "a step is one or the other", st->name, x->run_line, x->agent_line);
      return;
    }
    if (!st->run && !st->agent) {
      fail(c, st->line, UV_EINVAL, "[step %s] needs run = COMMAND or agent = PROMPT",
           st->name);
      return;
    }
    if (st->run && st->run[0] == '\0') {
      fail(c, x->run_line, UV_EINVAL, "[step %s] run: empty command", st->name);
      return;
    }
    if (st->agent && st->agent[0] == '\0') {
      fail(c, x->agent_line, UV_EINVAL, "[step %s] agent: empty prompt", st->name);
      return;
    }
    st->kind = st->run ? STG_WORKFLOW_RUN : STG_WORKFLOW_AGENT;
    if (st->run && st->model) {
      fail(c, x->model_line, UV_EINVAL, "[step %s] model: only for agent steps", st->name);
      return;
    }
    if (st->agent && st->cwd) {
      fail(c, x->cwd_line, UV_EINVAL, "[step %s] cwd: only for run steps", st->name);
      return;
    }
    if (st->agent && st->n_env) {
      fail(c, x->env_line, UV_EINVAL, "[step %s] env.%s: only for run steps", st->name,
           st->env[0].name);
      return;
    }
    if (x->timeout) {
      uint64_t ms = 0;
      if (stg_parse_duration(x->timeout, &ms) != 0 || ms == 0) {
        fail(c, x->timeout_line, UV_EINVAL, "[step %s] timeout: expected a duration such "
             "as 30s or 2m, not '%.40s'", st->name, x->timeout);
        return;
      }
      st->timeout_ms = ms;
    }
    if (st->cwd && st->cwd[0] == '\0') {
      fail(c, x->cwd_line, UV_EINVAL, "[step %s] cwd: empty", st->name);
      return;
    }
    if (st->agent)
      check_template(c, i);
    if (c->rc)
      return;
  }
}

/* --- public ------------------------------------------------------------------------ */

int stg_workflow_parse(const char *text, size_t len, const char *display,
                       stg_workflow_t **out, char *err, size_t errlen) {
  ctx_t c;
  memset(&c, 0, sizeof c);
  c.text = text;
  c.len = len;
  c.display = display ? display : "workflow";
  c.err = err;
  c.errlen = errlen;
  if (errlen)
    err[0] = '\0';
  *out = NULL;
  c.wf = calloc(1, sizeof *c.wf);
  if (c.wf == NULL)
    return UV_ENOMEM;
  if (len > STG_WORKFLOW_MAX_TEXT) {
    fail(&c, 0, UV_EINVAL, "longer than %u bytes", STG_WORKFLOW_MAX_TEXT);
    goto out;
  }
  int rc = ini_parse_stream(read_line, &c, on_value, &c);
  if (rc > 0 && (c.rc == 0 || rc < c.err_line)) {
    c.rc = 0;
    fail(&c, rc, UV_EINVAL, "expected [workflow], [step NAME] or key = value");
  } else if (rc < 0) {
    fail(&c, 0, UV_ENOMEM, "out of memory");
  }
  if (c.rc == 0)
    check_all(&c);

out:
  for (unsigned i = 0; i < c.wf->n_steps; i++)
    free(c.extra[i].timeout);
  free(c.extra);
  if (c.rc != 0) {
    stg_workflow_free(c.wf);
    return c.rc;
  }
  *out = c.wf;
  return 0;
}

void stg_workflow_free(stg_workflow_t *wf) {
  if (wf == NULL)
    return;
  free(wf->name);
  free(wf->description);
  for (unsigned i = 0; i < wf->n_inputs; i++) {
    free(wf->inputs[i].name);
    free(wf->inputs[i].default_value);
  }
  free(wf->inputs);
  for (unsigned i = 0; i < wf->n_steps; i++) {
    stg_workflow_step_t *st = &wf->steps[i];
    free(st->name);
    free(st->run);
    free(st->agent);
    free(st->model);
    free(st->cwd);
    for (unsigned j = 0; j < st->n_env; j++) {
      free(st->env[j].name);
      free(st->env[j].value);
    }
    free(st->env);
  }
  free(wf->steps);
  free(wf);
}

int stg_workflow_step_index(const stg_workflow_t *wf, const char *name) {
  for (unsigned i = 0; i < wf->n_steps; i++)
    if (strcmp(wf->steps[i].name, name) == 0)
      return (int)i;
  return -1;
}

const stg_workflow_step_t *stg_workflow_step(const stg_workflow_t *wf, const char *name) {
  int i = stg_workflow_step_index(wf, name);
  return i < 0 ? NULL : &wf->steps[i];
}

const stg_workflow_input_t *stg_workflow_input(const stg_workflow_t *wf, const char *name) {
  for (unsigned i = 0; i < wf->n_inputs; i++)
    if (strcmp(wf->inputs[i].name, name) == 0)
      return &wf->inputs[i];
  return NULL;
}
