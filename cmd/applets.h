/* The applet table: one executable, several programs, chosen by the
 * basename of argv[0] or, for `stigmer`, by the first argument. */
#ifndef STG_APPLETS_H
#define STG_APPLETS_H

typedef int (*stg_applet_main_fn)(int argc, char **argv);

typedef enum {
  STG_APPLET_HIDDEN = (1 << 0), /* not shown by `stigmer --help` */
  STG_APPLET_LINK = (1 << 1)    /* created by `stigmer --install DIR` */
} stg_applet_flags_t;

typedef struct {
  const char *name;        /* what argv[0] or the first argument says */
  stg_applet_main_fn main; /* its entry point */
  const char *applet;      /* the applet it runs (itself, or a link's target) */
  unsigned flags;          /* stg_applet_flags_t */
  const char *summary;     /* one line for --list */
} stg_applet_t;

/* The sorted table and its length. */
extern const stg_applet_t stg_applets[];
extern const unsigned stg_applets_count;

/* Binary search by name; NULL if there is none. */
const stg_applet_t *stg_applet_find(const char *name);

/* What main() calls. Returns the exit code. */
int stg_dispatch(int argc, char **argv);

/* The applets' entry points. */
int stigmer_main(int argc, char **argv);
int internal_server_main(int argc, char **argv);
int internal_workflow_runner_main(int argc, char **argv);
int agent_runner_supervisor_main(int argc, char **argv);

#endif
