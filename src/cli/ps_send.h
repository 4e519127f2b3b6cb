/*
 * ps_send: `penstock send`, a client of the event.EventService contract (see ps_send.c).
 */
#ifndef PS_SEND_H
#define PS_SEND_H

/** Runs `penstock send`; argv[0] is "send". Returns the exit code: 0, 1 (not all accepted) or 2 (usage). */
int ps_send_main(int argc, char **argv);

#endif
