/* lib/workflow: parsing, every error naming its line, env names, templates. */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "check.h"
#include "workflow.h"

static stg_workflow_t *parse(const char *text, char *err, size_t len, int *rc) {
  stg_workflow_t *wf = NULL;
  *rc = stg_workflow_parse(text, strlen(text), "wf.ini", &wf, err, len);
  return wf;
}

/* Parses text expecting an error that contains want. */
static void expect_error(const char *text, const char *want, int line) {
  char err[512];
  int rc;
  stg_workflow_t *wf = parse(text, err, sizeof err, &rc);
  CHECK(wf == NULL);
  CHECK_EQ_INT(rc, UV_EINVAL);
  CHECK_CONTAINS(err, want);
  if (line > 0) {
    char prefix[32];
    snprintf(prefix, sizeof prefix, "wf.ini:%d: ", line);
    CHECK(strncmp(err, prefix, strlen(prefix)) == 0);
    if (strncmp(err, prefix, strlen(prefix)) != 0)
      fprintf(stderr, "  error was: %s (expected line %d)\n", err, line);
  }
  stg_workflow_free(wf);
}

static const char example[] =
    "; a comment\n"
    "[workflow]\n"
    "name = hello\n"
    "description = says hello\n"
    "input.who = world        ; an input with a default\n"
    "input.target =           ; an input without a default: required\n"
    "[step greet]\n"
    "run = echo \"hello $STIGMER_INPUT_WHO\"\n"
    "timeout = 30s\n"
    "cwd = /tmp\n"
    "env.GREETING = hi\n"
    "[step summarize]\n"
    "agent = Summarize this: {{steps.greet.output}} for {{input.who}}\n"
    "model = qwen2.5-coder:7b\n"
    "timeout = 2m\n";

TEST(example) {
  char err[512];
  int rc;
  stg_workflow_t *wf = parse(example, err, sizeof err, &rc);
  if (rc)
    fprintf(stderr, "  %s\n", err);
  REQUIRE(rc == 0 && wf != NULL);
  CHECK_STR(wf->name, "hello");
  CHECK_STR(wf->description, "says hello");
  REQUIRE(wf->n_inputs == 2);
  CHECK_STR(wf->inputs[0].name, "who");
  CHECK_STR(wf->inputs[0].default_value, "world");
  CHECK_STR(wf->inputs[1].name, "target");
  CHECK(wf->inputs[1].default_value == NULL);
  REQUIRE(wf->n_steps == 2);
  const stg_workflow_step_t *g = &wf->steps[0];
  CHECK_STR(g->name, "greet");
  CHECK_EQ_INT(g->kind, STG_WORKFLOW_RUN);
  CHECK_STR(g->run, "echo \"hello $STIGMER_INPUT_WHO\"");
  CHECK_EQ_INT(g->timeout_ms, 30000);
  CHECK_STR(g->cwd, "/tmp");
  REQUIRE(g->n_env == 1);
  CHECK_STR(g->env[0].name, "GREETING");
  CHECK_STR(g->env[0].value, "hi");
  CHECK_EQ_INT(g->line, 7);
  const stg_workflow_step_t *s = &wf->steps[1];
  CHECK_EQ_INT(s->kind, STG_WORKFLOW_AGENT);
  CHECK_STR(s->model, "qwen2.5-coder:7b");
  CHECK_EQ_INT(s->timeout_ms, 120000);
  CHECK(stg_workflow_step(wf, "summarize") == s);
  CHECK_EQ_INT(stg_workflow_step_index(wf, "summarize"), 1);
  CHECK(stg_workflow_step(wf, "nope") == NULL);
  CHECK(stg_workflow_input(wf, "who") == &wf->inputs[0]);
  CHECK(stg_workflow_input(wf, "nope") == NULL);
  stg_workflow_free(wf);
}

TEST(continuation_lines) {
  const char *text =
      "[workflow]\nname = multi\n"
      "[step a]\n"
      "run = echo one &&\n"
      "  echo two &&\n"
      "\techo three\n"
      "timeout = 1m30s\n"
      "[step b]\n"
      "agent = line one\n"
      "   line two {{steps.a.output}}\n";
  char err[512];
  int rc;
  stg_workflow_t *wf = parse(text, err, sizeof err, &rc);
  if (rc)
    fprintf(stderr, "  %s\n", err);
  REQUIRE(rc == 0);
  CHECK_STR(wf->steps[0].run, "echo one &&\necho two &&\necho three");
  CHECK_EQ_INT(wf->steps[0].timeout_ms, 90000);
  CHECK_STR(wf->steps[1].agent, "line one\nline two {{steps.a.output}}");
  stg_workflow_free(wf);
}

TEST(long_names_are_not_truncated) {
  /* inih cuts section and key names at 50 characters */
  char name[65];
  memset(name, 'n', 64);
  name[64] = '\0';
  char text[1024];
  snprintf(text, sizeof text,
           "[workflow]\nname = x\ninput.%s = v\n[step %s]\nrun = true\n", name, name);
  char err[512];
  int rc;
  stg_workflow_t *wf = parse(text, err, sizeof err, &rc);
  REQUIRE(rc == 0);
  CHECK_STR(wf->inputs[0].name, name);
  CHECK_STR(wf->steps[0].name, name);
  stg_workflow_free(wf);
  snprintf(text, sizeof text, "[workflow]\nname = x\n[step %sn]\nrun = true\n", name);
  expect_error(text, "longer than 64", 3);
}

TEST(errors_name_their_line) {
  expect_error("[workflow]\nname = x\n[step greet]\nrun = true\ntimeout = soon\n",
               "[step greet] timeout: expected a duration", 5);
  expect_error("[workflow]\nname = x\n[step a]\nrun = true\n[step a]\nrun = false\n",
               "duplicate step name 'a' (first on line 3)", 5);
  expect_error("[workflow]\nname = x\n[step a]\nrun = true\nagent = hi\n",
               "[step a] has both run (line 4) and agent (line 5)", 3);
  expect_error("[workflow]\nname = x\n[step a]\ntimeout = 1s\n",
               "[step a] needs run = COMMAND or agent = PROMPT", 3);
  expect_error("[workflow]\nname = x\n[step a]\n", "[step a] needs run", 3);
  expect_error("[workflow]\nname = x\n[step a]\nrun = true\nrnu = typo\n",
               "[step a]: unknown key 'rnu'", 5);
  expect_error("[workflow]\nname = x\nnmae = y\n[step a]\nrun = true\n",
               "[workflow]: unknown key 'nmae'", 3);
  expect_error("[workflow]\ndescription = d\n[step a]\nrun = true\n",
               "[workflow] name is required", 1);
  expect_error("[step a]\nrun = true\n", "no [workflow] section", 0);
  expect_error("", "no [workflow] section", 0);
  expect_error("[workflow]\nname = x\n", "no steps", 1);
  expect_error("[workflow]\nname = x\n[stpe a]\nrun = true\n", "unknown section [stpe a]", 3);
  expect_error("[workflow]\nname = x\n[step a b]\nrun = true\n", "a step name is", 3);
  expect_error("[workflow]\nname = x\n[step a]\nrun = true\n[workflow]\n",
               "a second [workflow] section (the first is on line 1)", 5);
  expect_error("[workflow]\nname = x\nname = y\n[step a]\nrun = true\n", "given twice", 3);
  expect_error("[workflow]\nname = x\ninput.a = 1\ninput.a = 2\n[step a]\nrun = true\n",
               "duplicate input 'a' (first on line 3)", 4);
  expect_error("[workflow]\nname = x\ninput.a-b = 1\ninput.a_b = 2\n[step a]\nrun = true\n",
               "would both be $STIGMER_INPUT_A_B", 4);
  expect_error("[workflow]\nname = x\n[step a-b]\nrun = true\n[step a_b]\nrun = true\n",
               "would both be $STIGMER_STEP_A_B_OUTPUT", 5);
  expect_error("[workflow]\nname = x\ninput.a$ = 1\n[step a]\nrun = true\n",
               "an input name is", 3);
  expect_error("[workflow]\nname = x\n[step a]\nrun = true\nmodel = m\n",
               "[step a] model: only for agent steps", 5);
  expect_error("[workflow]\nname = x\n[step a]\nagent = hi\ncwd = /\n",
               "[step a] cwd: only for run steps", 5);
  expect_error("[workflow]\nname = x\n[step a]\nagent = hi\nenv.X = 1\n",
               "[step a] env.X: only for run steps", 5);
  expect_error("[workflow]\nname = x\n[step a]\nrun = true\nenv.1X = 1\n",
               "an environment variable name", 5);
  expect_error("[workflow]\nname = x\n[step a]\nrun = true\nenv.X = 1\nenv.X = 2\n",
               "[step a] env.X given twice", 6);
  expect_error("[workflow]\nname = x\nrun = true\n[step a]\nrun =\n",
               "unknown key 'run'", 3);
  expect_error("[workflow]\nname = x\n[step a]\nrun =\n", "[step a] run: empty command", 4);
  expect_error("key = v\n[workflow]\n", "'key' outside any section", 1);
  expect_error("[workflow]\nname = x\njust words\n[step a]\nrun = true\n",
               "expected [workflow], [step NAME] or key = value", 3);
  expect_error("[workflow]\nname = x\n[step a\nrun = true\n",
               "expected [workflow], [step NAME] or key = value", 3);
  char longline[400];
  snprintf(longline, sizeof longline, "[workflow]\nname = x\n[step a]\nrun = %0250d\n", 7);
  expect_error(longline, "line longer than 198 characters", 4);
  const char nul[] = "[workflow]\nname = x\n[step a]\nrun = tr\0ue\n";
  char err[256];
  stg_workflow_t *wf = NULL;
  CHECK_EQ_INT(stg_workflow_parse(nul, sizeof nul - 1, "wf.ini", &wf, err, sizeof err),
               UV_EINVAL);
  CHECK_CONTAINS(err, "wf.ini:4: a NUL byte");
  CHECK(wf == NULL);
}

TEST(template_references_checked) {
  expect_error("[workflow]\nname = x\n[step a]\nagent = hi {{input.who}}\n",
               "[step a] agent: {{input.who}}: no such input", 4);
  expect_error("[workflow]\nname = x\n[step a]\nagent = {{steps.b.output}}\n[step b]\nrun = true\n",
               "{{steps.b.output}}: that step runs later", 4);
  expect_error("[workflow]\nname = x\n[step a]\nagent = {{steps.a.output}}\n",
               "that step runs now", 4);
  expect_error("[workflow]\nname = x\n[step a]\nagent = {{steps.zz.output}}\n",
               "{{steps.zz.output}}: no such step", 4);
  expect_error("[workflow]\nname = x\n[step a]\nagent = {{inputs.who}}\n",
               "unknown reference {{inputs.who}}", 4);
  expect_error("[workflow]\nname = x\n[step a]\nrun = true\n[step b]\nagent = x\n"
               "  {{steps.a.result}}\n",
               "unknown reference {{steps.a.result}}", 6);
}

static const char *lookup(void *data, bool is_step, const char *name) {
  (void)data;
  if (!is_step && strcmp(name, "who") == 0)
    return "world";
  if (is_step && strcmp(name, "greet") == 0)
    return "hello world\n";
  if (is_step && strcmp(name, "big") == 0) {
    static char big[STG_WORKFLOW_MAX_VALUE + 100];
    memset(big, 'b', sizeof big - 1);
    return big;
  }
  return NULL;
}

TEST(render) {
  char *out = NULL;
  CHECK_EQ_INT(stg_workflow_render("Say {{steps.greet.output}} to {{ input.who }}!", lookup,
                                   NULL, &out), 0);
  CHECK_STR(out, "Say hello world\n to world!");
  free(out);
  CHECK_EQ_INT(stg_workflow_render("{{input.missing}}|{{ unclosed", lookup, NULL, &out), 0);
  CHECK_STR(out, "|{{ unclosed");
  free(out);
  CHECK_EQ_INT(stg_workflow_render("{{steps.big.output}}", lookup, NULL, &out), 0);
  CHECK_EQ_INT(strlen(out), STG_WORKFLOW_MAX_VALUE);
  free(out);
  out = NULL;
  CHECK_EQ_INT(stg_workflow_render("{{bogus}}", lookup, NULL, &out), UV_EINVAL);
  CHECK(out == NULL);
  /* values are not templates themselves */
  CHECK_EQ_INT(stg_workflow_render("no refs", NULL, NULL, &out), 0);
  CHECK_STR(out, "no refs");
  free(out);
}

TEST(env_names) {
  char buf[128];
  CHECK_EQ_INT(stg_workflow_input_env("who", buf, sizeof buf), 0);
  CHECK_STR(buf, "STIGMER_INPUT_WHO");
  CHECK_EQ_INT(stg_workflow_input_env("my-input_2", buf, sizeof buf), 0);
  CHECK_STR(buf, "STIGMER_INPUT_MY_INPUT_2");
  CHECK_EQ_INT(stg_workflow_output_env("greet", buf, sizeof buf), 0);
  CHECK_STR(buf, "STIGMER_STEP_GREET_OUTPUT");
  CHECK_EQ_INT(stg_workflow_output_env("a.b c", buf, sizeof buf), 0);
  CHECK_STR(buf, "STIGMER_STEP_A_B_C_OUTPUT");
  CHECK_EQ_INT(stg_workflow_output_env("greet", buf, 10), UV_ENOBUFS);
  CHECK(stg_workflow_name_ok("a-Z_9"));
  CHECK(!stg_workflow_name_ok(""));
  CHECK(!stg_workflow_name_ok("a.b"));
  CHECK(!stg_workflow_name_ok("caf\xc3\xa9"));
}

TEST(inline_comments_and_crlf) {
  const char *text = "[workflow]\r\nname = x ; comment\r\n[step a]\r\nrun = echo a;b\r\n";
  char err[256];
  int rc;
  stg_workflow_t *wf = parse(text, err, sizeof err, &rc);
  if (rc)
    fprintf(stderr, "  %s\n", err);
  REQUIRE(rc == 0);
  CHECK_STR(wf->name, "x");
  CHECK_STR(wf->steps[0].run, "echo a;b");
  stg_workflow_free(wf);
}

int main(void) {
  RUN(example);
  RUN(continuation_lines);
  RUN(long_names_are_not_truncated);
  RUN(errors_name_their_line);
  RUN(template_references_checked);
  RUN(render);
  RUN(env_names);
  RUN(inline_comments_and_crlf);
  return CHECK_DONE();
}
