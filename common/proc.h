/* proc.h - what the master hands each child, and the children's entries. */
#ifndef PROC_H
#define PROC_H

#include <stdint.h>
#include <sys/types.h>
#include <openssl/ssl.h>

struct conf;

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
/* Milliseconds on CLOCK_BOOTTIME (counts suspend): lease age (SPEC 2). */
int64_t	proc_boot_ms(void);
/* This boot's /proc/sys/kernel/random/boot_id; -1 (id zeroed) if unread. */
#define PROC_BOOT_ID_LEN	16
int	proc_boot_id(unsigned char id[PROC_BOOT_ID_LEN]);

/* Entries: never return. */
void	worker_main(struct proc_env *) __attribute__((noreturn));
void	uplink_main(struct proc_env *) __attribute__((noreturn));
void	issuer_main(struct proc_env *) __attribute__((noreturn));

/*
 * proc.c: naming, signals, privilege drop, sandbox.
 * proc_signals: ignore what the master handles for the children (PIPE,
 * INT, HUP), call stop on TERM and USR2, reopen logfile on USR1.
 */
struct event_base;
void	proc_signals(struct event_base *, const char *logfile,
	    void (*stop)(int, short, void *));
void	proc_name(const char *comm);
/*
 * Drop to server.user (exit 2 if that fails), then open the store (exit 1),
 * so a fresh store's files belong to that user. Key files are read before.
 */
struct store *proc_open_store(const struct conf *);
/*
 * serve's store check before any child starts, in a short-lived child of
 * its own: proc_open_store's steps, then store_check. Logs why and exits 1
 * if the store cannot be used, else exits 0.
 */
void	proc_probe_store(const struct conf *) __attribute__((noreturn));
/*
 * A child's startup report to the master on fd (a pipe): its warnings and
 * errors (log_tee lines) until proc_ready() writes PROC_READY and
 * closes fd. A child that dies before that died before it was ready.
 */
#define PROC_READY	"R"
void	proc_report_init(int fd);
void	proc_ready(void);
int	proc_user_check(const char *user, char *err, size_t errlen);
int	proc_sandbox_worker(void);	/* NO_NEW_PRIVS + seccomp filter */
int	proc_no_dump(void);

#endif
