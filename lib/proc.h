/* Facts about other processes, for telling a process from a recycled pid. */
#ifndef STG_PROC_H
#define STG_PROC_H

#include <stdbool.h>

/* The start time of process pid in clock ticks since boot (field 22 of
 * /proc/PID/stat): with the pid it names one process for ever. 0 when the
 * process is gone or the system cannot tell (not Linux). *zombie (may be
 * NULL) says whether it has exited and waits to be reaped. */
unsigned long long stg_proc_start_ticks(int pid, bool *zombie);

#endif
