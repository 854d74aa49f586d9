/* The client side of the sd_notify protocol: a datagram to the unix socket
 * named by $NOTIFY_SOCKET ("@name" for the abstract namespace). */
#ifndef STG_NOTIFY_H
#define STG_NOTIFY_H

/* Sends msg (e.g. "READY=1", "STATUS=listening"). Returns 0, 0 when
 * NOTIFY_SOCKET is unset (nothing to tell), or a negative errno. */
int stg_notify(const char *msg);

/* $WATCHDOG_USEC as milliseconds, or 0 when unset or invalid. */
unsigned long long stg_notify_watchdog_ms(void);

#endif
