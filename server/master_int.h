/*
 * master_int.h - what the parts of the master share (master.c,
 * master_kids.c, master_listen.c, master_store.c, master_reload.c): its
 * one state, struct master, and the steps one part calls in another.
 * The rest of licproxy sees only master.h.
 */
#ifndef MASTER_INT_H
#define MASTER_INT_H

#include <sys/types.h>

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "conf.h"
#include "log.h"
#include "proc.h"
#include "stats.h"

#define MASTER_MAX_CHILDREN	STATS_MAX_SLOTS

struct passwd;
struct upgrade_state;

struct child {
	pid_t		pid;		/* 0 = free */
	int		role;		/* enum proc_role */
	int		gen;		/* configuration generation */
	int64_t		started;
	int64_t		kill_at;	/* 0, or SIGKILL after this (draining) */
	int		rfd;		/* its startup report (proc_ready), or -1 */
	int		ready;
	size_t		len;		/* of line, the report line being read */
	char		line[LOG_TEE_MAX + 4];
	char		why[LOG_TEE_MAX + 4];	/* its last error line */
};

struct master {
	struct conf		*cf;
	struct conf_overrides	 ov;
	const char		*cfpath;
	SSL_CTX			*tls;
	int			 fd_tls, fd_status, fd_ipc;
	char			 ipc_path[108];
	int			 gen;
	int			 stopping;
	int64_t			 stop_deadline;
	int			 fails[PROC_NROLES];	/* consecutive quick deaths */
	int64_t			 not_before[PROC_NROLES];	/* back-off, by role */
	int			 unready[PROC_NROLES];	/* deaths in a row before ready */
	int			 exit_code;
	struct child		 kids[MASTER_MAX_CHILDREN];
	pid_t			 pid;
	int			 upgraded;	/* this image came from USR2 */
};

/* master_kids.c: spawn, reap, respawn, retire */
void	master_child_init(struct master *);
void	master_fill(struct master *);
void	master_reports(struct master *);
void	master_reap(struct master *);
void	master_retire_generation(struct master *);
void	master_retire_backend(struct master *);
void	master_enforce_deadlines(struct master *);
void	master_signal_children(struct master *, int);
void	master_stop(struct master *, int);
void	master_stop_backend(struct master *);
int	master_children_left(struct master *);

/* master_listen.c: listeners and the IPC socket */
int	master_listen(const char *, int);
int	master_listen_ipc(struct master *);
int	master_new_ipc(struct master *);
int	master_rebind(struct master *, const struct conf *);
int	master_adopt_listener(int, const char *, int);

/* master_store.c: the store directory and its check */
struct passwd	*master_child_user(struct master *);
int	master_prepare_store(struct master *);
int	master_probe_store(struct master *);

/* master_reload.c: HUP and USR2 */
void	master_reload(struct master *);
void	master_upgrade(struct master *);
int	master_adopt(struct master *, const struct upgrade_state *);
void	master_upgraded(struct master *);

#endif
