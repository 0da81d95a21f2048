/* proc.h - the process roles, what the master hands each child, and the
 * steps every child takes for itself (name, signals, drop, report). */
#ifndef PROC_H
#define PROC_H

#include <stdint.h>
#include <sys/types.h>
#include <openssl/ssl.h>

struct conf;
struct event_base;

/* The process roles the master runs (a lease's roles are token.h's). */
enum proc_role { PROC_WORKER = 0, PROC_UPLINK = 1, PROC_ISSUER = 2 };
#define PROC_NROLES	3
/* "worker", "uplink", "issuer" (metrics labels, log tags); "?" if unknown. */
const char	*proc_role_name(int role);
/* Its comm (ps, top): "licproxy-worker" ... */
const char	*proc_role_comm(int role);

struct proc_env {
	struct conf	*cf;
	SSL_CTX		*tls;		/* server context (workers) */
	int		 fd_tls;	/* listening, :port */
	int		 fd_status;	/* listening, :status_port */
	int		 fd_ipc;	/* listening Unix socket (uplink/issuer) */
	char		 ipc_path[108];	/* its path (workers connect) */
	int		 slot;		/* stats slot */
};

/* Milliseconds on the monotonic clock: deadlines and back-off. */
int64_t	proc_now_ms(void);
int64_t	 proc_now_us(void);	/* monotonic, microseconds */
/* Milliseconds on CLOCK_BOOTTIME (counts suspend): lease age. */
int64_t	proc_boot_ms(void);
/* This boot's /proc/sys/kernel/random/boot_id; -1 (id zeroed) if unread. */
#define PROC_BOOT_ID_LEN	16
int	proc_boot_id(unsigned char id[PROC_BOOT_ID_LEN]);

/* PR_SET_NAME to comm, and the log tag (comm without "licproxy-"). */
void	proc_name(const char *comm);
/*
 * Ignore what the master handles for the children (PIPE, INT, HUP), call
 * stop on TERM and USR2, reopen logfile on USR1.
 */
void	proc_signals(struct event_base *, const char *logfile,
	    void (*stop)(int, short, void *));
int	proc_user_check(const char *user, char *err, size_t errlen);
/*
 * setgroups/setresgid/setresuid to user; a no-op unless root, or when user
 * is unset or root itself. -1 (logged) if the user is unknown or a call
 * fails: the child then exits 2, a configuration error.
 */
int	proc_drop_privs(const char *user);
int	proc_no_dump(void);	/* PR_SET_DUMPABLE 0: for the key holders */
/*
 * A child's startup report to the master on fd (a pipe): its warnings and
 * errors (log_tee lines) until proc_ready() writes PROC_READY and
 * closes fd. A child that dies before that died before it was ready.
 */
#define PROC_READY	"R"
void	proc_report_init(int fd);
void	proc_ready(void);

#endif
