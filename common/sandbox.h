/*
 * sandbox.h - one seccomp allow-list per process role, loaded by each
 * role's entry once its setup is done. Each sets PR_SET_NO_NEW_PRIVS; a
 * call off the list fails with EPERM; a syscall of a foreign architecture
 * kills the process. Filters stack: children inherit the master's filter
 * and add their own narrower one.
 */
#ifndef SANDBOX_H
#define SANDBOX_H

int	sandbox_worker(void);	/* no socket() but AF_UNIX */
int	sandbox_issuer(void);	/* no network at all: AF_UNIX, no connect */
int	sandbox_uplink(void);	/* INET, but no exec, ptrace, io_uring... */
int	sandbox_master(void);	/* supervision, reload, USR2 re-exec */

#endif
