/* Workflow files: an INI text with a [workflow] section and [step NAME]
 * sections run in file order. The format is documented for users in
 * docs/workflows.md.
 *
 * The parser is strict: unknown sections and keys, duplicates, bad names
 * and bad durations are errors naming the line ("hello.ini:7: [step greet]
 * timeout: expected a duration such as 30s or 2m"). A parsed workflow is
 * read-only; its fields may be read directly.
 *
 * Helpers for the runner: the environment variable names that carry
 * inputs and step outputs to `run` steps, and the templating of `agent`
 * prompts ({{input.NAME}}, {{steps.NAME.output}}).
 */
#ifndef STG_WORKFLOW_H
#define STG_WORKFLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STG_WORKFLOW_MAX_NAME 64        /* step and input names */
#define STG_WORKFLOW_MAX_STEPS 256
#define STG_WORKFLOW_MAX_INPUTS 64
#define STG_WORKFLOW_MAX_ENV 64          /* env.NAME keys per step */
#define STG_WORKFLOW_MAX_TEXT (1u << 20) /* the whole file */
/* An input or step output handed to a step (environment variable or
 * prompt substitution) is cut to this many bytes. */
#define STG_WORKFLOW_MAX_VALUE (64u * 1024)
/* A rendered prompt is at most this long. */
#define STG_WORKFLOW_MAX_PROMPT (1u << 20)

typedef enum {
  STG_WORKFLOW_RUN = 1,   /* a shell command */
  STG_WORKFLOW_AGENT = 2, /* a prompt for the agent-runner */
} stg_workflow_kind_t;

typedef struct {
  char *name;           /* NAME of env.NAME */
  char *value;
} stg_workflow_env_t;

typedef struct {
  char *name;           /* [A-Za-z0-9_-]{1,64} */
  char *default_value;  /* NULL: the input is required */
  int line;             /* where it was declared */
} stg_workflow_input_t;

typedef struct {
  char *name;           /* [A-Za-z0-9_-]{1,64}, unique */
  stg_workflow_kind_t kind;
  char *run;            /* kind RUN: the command for /bin/sh -c */
  char *agent;          /* kind AGENT: the prompt template */
  char *model;          /* AGENT only; NULL: the runner's default */
  uint64_t timeout_ms;  /* 0: not set (the runner's default) */
  char *cwd;            /* RUN only; NULL: the runner's choice */
  stg_workflow_env_t *env; /* RUN only: extra environment, in file order */
  unsigned n_env;
  int line;             /* line of the [step NAME] header */
} stg_workflow_step_t;

typedef struct stg_workflow_s {
  char *name;           /* [workflow] name, required */
  char *description;    /* NULL when not given */
  stg_workflow_input_t *inputs;
  unsigned n_inputs;
  stg_workflow_step_t *steps; /* at least one */
  unsigned n_steps;
} stg_workflow_t;

/* Parses len bytes of text. display names the text in messages
 * ("hello.ini"). Returns 0 and a new workflow in *out, or UV_EINVAL with
 * a message naming the line in err (UV_ENOMEM when out of memory). */
int stg_workflow_parse(const char *text, size_t len, const char *display,
                       stg_workflow_t **out, char *err, size_t errlen);

void stg_workflow_free(stg_workflow_t *wf);

/* The step or input of that name, or NULL. */
const stg_workflow_step_t *stg_workflow_step(const stg_workflow_t *wf, const char *name);
/* Its index in wf->steps, or -1. */
int stg_workflow_step_index(const stg_workflow_t *wf, const char *name);
const stg_workflow_input_t *stg_workflow_input(const stg_workflow_t *wf, const char *name);

/* "STIGMER_INPUT_<NAME>" and "STIGMER_STEP_<NAME>_OUTPUT": the name upper
 * cased, any character not in [A-Z0-9] replaced by '_'. Return 0, or
 * UV_ENOBUFS when buf is too small. */
int stg_workflow_input_env(const char *input, char *buf, size_t len);
int stg_workflow_output_env(const char *step, char *buf, size_t len);

/* Looks up a reference while rendering: is_step false for {{input.NAME}}
 * (name is the input), true for {{steps.NAME.output}} (name is the step).
 * Returns the value (borrowed until render returns) or NULL, which renders
 * as the empty string. */
typedef const char *(*stg_workflow_lookup_fn)(void *data, bool is_step, const char *name);

/* Renders an agent prompt: each reference replaced by its value, each
 * value cut to STG_WORKFLOW_MAX_VALUE bytes. References were checked at
 * parse time; one that does not parse here is UV_EINVAL. Returns 0 and a
 * new string (caller frees) in *out, UV_E2BIG when the result would exceed
 * STG_WORKFLOW_MAX_PROMPT, or UV_ENOMEM. */
int stg_workflow_render(const char *tmpl, stg_workflow_lookup_fn lookup, void *data,
                        char **out);

/* True for a valid step or input name. */
bool stg_workflow_name_ok(const char *name);

#endif
