/*
 * upgrade.h - USR2: the master re-executes the binary found at its path,
 * keeping its pid, its listening sockets, the shared stats block and its
 * children (the old generation, which the new image drains).
 */
#ifndef UPGRADE_H
#define UPGRADE_H

#include <sys/types.h>

#define UPGRADE_MAX_KIDS	128	/* = MASTER_MAX_CHILDREN */

struct upgrade_state {
	int		fd_tls, fd_status, fd_ipc;	/* listening */
	int		fd_stats;			/* memfd, or -1 */
	int		nkids;
	struct {
		pid_t	pid;
		int	role;				/* enum stats_role */
	}		kids[UPGRADE_MAX_KIDS];
};

/* main(), first thing: the path and argv to re-execute later. */
void	upgrade_init(char **argv);
/*
 * Run the new binary's check-config, then execve it with the state in its
 * environment. Returns -1 (having logged why) when the new binary cannot
 * take over; does not return when it does.
 */
int	upgrade_exec(const struct upgrade_state *);
/* 1 when this image was started by upgrade_exec and has not taken over. */
int	upgrade_active(void);
/* 1 and st filled when this image was started by upgrade_exec, else 0. */
int	upgrade_inherited(struct upgrade_state *st);
/* The new image serves: forget the hand-over, close the old binary. */
void	upgrade_commit(void);
/* The new image could not start: go back to the previous binary, if any. */
void	upgrade_fallback(void);

#endif
