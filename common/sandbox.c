/*
 * sandbox.c - the seccomp allow-lists, one per role. What is allowed is
 * what the role's libraries were seen to call (libevent, OpenSSL, LMDB,
 * jansson, msgpack; libcurl and the resolver in the uplink; ld.so and the
 * whole setup again in the master, which re-executes itself on USR2 and
 * whose children inherit its filter). Everything else fails with EPERM
 * rather than killing: a call a library makes on a rare path then shows
 * up as an error in the log, not as a dead process.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <seccomp.h>

#include "sandbox.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

/* Every role: memory, files already open, time, signals, the event loop. */
static const char *const calls_base[] = {
	"read", "write", "readv", "writev", "pread64", "pwrite64", "close",
	"lseek", "fstat", "newfstatat", "statx", "stat", "lstat", "fstatfs",
	"statfs", "openat", "open", "dup", "dup2", "dup3", "fcntl", "flock",
	"fsync", "fdatasync", "msync", "ftruncate", "fallocate",
	"mmap", "munmap", "mremap", "mprotect", "madvise", "brk", "mincore",
	"futex", "set_robust_list", "rseq", "sched_yield", "sched_getaffinity",
	"nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres",
	"gettimeofday", "time", "getrandom", "uname", "sysinfo", "getrusage",
	"getpid", "gettid", "getppid", "getuid", "geteuid", "getgid",
	"getegid", "getgroups", "getresuid", "getresgid", "prlimit64",
	"getrlimit",
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",
	"exit", "exit_group", "restart_syscall",
	"epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait",
	"epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect6",
	"eventfd2", "timerfd_create", "timerfd_settime", "timerfd_gettime",
	/* pipe: pipe2's older form, no more power; valgrind's scheduler
	 * makes one in every child, so `make valgrind` runs under these
	 * same filters */
	"pipe", "pipe2", "socketpair", "accept", "accept4", "recvfrom", "recvmsg",
	"recvmmsg", "sendto", "sendmsg", "sendmmsg", "shutdown",
	"getsockname", "getpeername", "setsockopt", "getsockopt",
	"prctl", "seccomp",
};

/*
 * The uplink and the issuer: SIGKILL a worker that sent a bad frame,
 * through a pidfd taken when it connected (server/chans.c).
 */
static const char *const calls_backend[] = {
	"kill", "tgkill", "pidfd_open", "pidfd_send_signal",
};

/* The uplink: outbound connections and curl's resolver threads. */
static const char *const calls_uplink[] = { "connect", "bind" };

/*
 * The master: everything its setup does (a USR2 upgrade runs that setup
 * again in the new image, under this filter), plus supervision and what
 * its children do before their own filters (the privilege drop).
 */
static const char *const calls_master[] = {
	"kill", "tgkill", "tkill", "wait4", "waitid", "rt_sigtimedwait",
	"rt_sigpending",	/* a stop during an upgrade's check (upgrade.c) */
	"rt_sigsuspend", "clone", "clone3", "fork", "vfork", "execve",
	"set_tid_address", "arch_prctl", "access", "faccessat", "faccessat2",
	"readlink", "readlinkat", "getcwd", "getdents64", "umask",
	"mkdir", "mkdirat", "unlink", "unlinkat", "rename", "renameat",
	"renameat2", "chmod", "fchmod", "fchmodat", "chown", "fchown",
	"lchown", "fchownat", "memfd_create", "socket", "connect", "bind",
	"listen", "setgroups", "setresuid", "setresgid", "setuid", "setgid",
	"capget", "setsid", "getpgrp", "getpgid", "ioctl",
	/* children inherit this filter: the uplink's and issuer's kills */
	"pidfd_open", "pidfd_send_signal",
};

static int
sandbox_add(scmp_filter_ctx ctx, const char *const *names, size_t n)
{
	size_t	i;
	int	nr;

	for (i = 0; i < n; i++) {
		/* A name this kernel or libseccomp does not know: skip it. */
		if ((nr = seccomp_syscall_resolve_name(names[i])) ==
		    __NR_SCMP_ERROR)
			continue;
		if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) < 0)
			return -1;
	}
	return 0;
}

/* The base list, NO_NEW_PRIVS and the architecture check. */
static scmp_filter_ctx
sandbox_begin(void)
{
	scmp_filter_ctx	ctx;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		return NULL;
	if ((ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM))) == NULL)
		return NULL;
	if (seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL) < 0 ||
	    sandbox_add(ctx, calls_base, NELEM(calls_base)) == -1) {
		seccomp_release(ctx);
		return NULL;
	}
	return ctx;
}

static int
sandbox_load(scmp_filter_ctx ctx)
{
	int rv = seccomp_load(ctx) < 0 ? -1 : 0;

	seccomp_release(ctx);
	return rv;
}

/* socket() of one address family only. */
static int
sandbox_family(scmp_filter_ctx ctx, int family)
{
	return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
	    SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)family)) < 0 ? -1 : 0;
}

/* libevent asks how much a socket holds; nothing else needs ioctl. */
static int
sandbox_ioctl(scmp_filter_ctx ctx)
{
	if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
	    SCMP_A1(SCMP_CMP_EQ, FIONREAD)) < 0 ||
	    seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
	    SCMP_A1(SCMP_CMP_EQ, FIONBIO)) < 0)
		return -1;
	return 0;
}

/*
 * Workers: AF_UNIX sockets only (the uplink channel) and connect (on those
 * only, since no other socket can be made; the accepted TCP sockets are
 * connected already). Signals only to itself (abort, raise).
 */
int
sandbox_worker(void)
{
	scmp_filter_ctx	ctx;
	pid_t		self = getpid();

	if ((ctx = sandbox_begin()) == NULL)
		return -1;
	if (sandbox_family(ctx, AF_UNIX) == -1 || sandbox_ioctl(ctx) == -1 ||
	    seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(connect), 0) < 0 ||
	    seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(kill), 1,
	    SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)self)) < 0 ||
	    seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
	    SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)self)) < 0) {
		seccomp_release(ctx);
		return -1;
	}
	return sandbox_load(ctx);
}

/* The issuer accepts on its Unix socket; it connects nowhere. */
int
sandbox_issuer(void)
{
	scmp_filter_ctx	ctx;

	if ((ctx = sandbox_begin()) == NULL)
		return -1;
	if (sandbox_family(ctx, AF_UNIX) == -1 || sandbox_ioctl(ctx) == -1 ||
	    sandbox_add(ctx, calls_backend, NELEM(calls_backend)) == -1) {
		seccomp_release(ctx);
		return -1;
	}
	return sandbox_load(ctx);
}

/*
 * The uplink: IPv4, IPv6 and Unix sockets (netlink for the resolver's
 * address check), and threads for curl's resolver: clone only with
 * CLONE_THREAD, and clone3 (whose flags a filter cannot read) answered
 * ENOSYS so glibc falls back to clone.
 */
int
sandbox_uplink(void)
{
	scmp_filter_ctx	ctx;

	if ((ctx = sandbox_begin()) == NULL)
		return -1;
	if (sandbox_family(ctx, AF_UNIX) == -1 ||
	    sandbox_family(ctx, AF_INET) == -1 ||
	    sandbox_family(ctx, AF_INET6) == -1 ||
	    sandbox_family(ctx, AF_NETLINK) == -1 ||
	    sandbox_ioctl(ctx) == -1 ||
	    sandbox_add(ctx, calls_backend, NELEM(calls_backend)) == -1 ||
	    sandbox_add(ctx, calls_uplink, NELEM(calls_uplink)) == -1 ||
	    seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
	    SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)) < 0 ||
	    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3),
	    0) < 0) {
		seccomp_release(ctx);
		return -1;
	}
	return sandbox_load(ctx);
}

/*
 * The master, after its setup: what supervision, reload (new listeners,
 * certificates and keys re-read) and the USR2 re-exec need. Not ptrace,
 * mount, bpf, io_uring, module loading, namespaces or the like.
 */
int
sandbox_master(void)
{
	scmp_filter_ctx	ctx;

	if ((ctx = sandbox_begin()) == NULL)
		return -1;
	if (sandbox_add(ctx, calls_master, NELEM(calls_master)) == -1) {
		seccomp_release(ctx);
		return -1;
	}
	return sandbox_load(ctx);
}
