/* libFuzzer target: the workflow file parser (lib/workflow), and for what
 * parses, the env names and the rendering of every agent prompt. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "workflow.h"

static const char *lookup(void *data, bool is_step, const char *name) {
  (void)data;
  (void)name;
  return is_step ? "step output {{input.x}}" : "an input";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  stg_workflow_t *wf = NULL;
  char err[512];
  if (stg_workflow_parse((const char *)data, size, "fuzz.ini", &wf, err, sizeof err) != 0) {
    if (wf != NULL || err[0] == '\0')
      abort(); /* an error always says why, and returns nothing */
    return 0;
  }
  char buf[256];
  for (unsigned i = 0; i < wf->n_inputs; i++)
    if (stg_workflow_input_env(wf->inputs[i].name, buf, sizeof buf) != 0)
      abort();
  for (unsigned i = 0; i < wf->n_steps; i++) {
    const stg_workflow_step_t *st = &wf->steps[i];
    if (stg_workflow_output_env(st->name, buf, sizeof buf) != 0)
      abort();
    if ((st->kind == STG_WORKFLOW_RUN) != (st->run != NULL) || (st->run && st->agent))
      abort();
    if (st->agent) {
      char *out = NULL;
      /* references were checked at parse time, so rendering succeeds */
      if (stg_workflow_render(st->agent, lookup, NULL, &out) != 0)
        abort();
      free(out);
    }
  }
  stg_workflow_free(wf);
  return 0;
}
