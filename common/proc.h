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
int	proc_user_check(const char *user, char *err, size_t errlen);
int	proc_sandbox_worker(void);	/* NO_NEW_PRIVS + seccomp filter */
int	proc_no_dump(void);

#endif
