/*
 * test_sandbox.c - the worker's seccomp filter, applied for real: each
 * case forks, the child calls sandbox_worker() and probes the
 * kernel; the verdict comes back as the child's exit code (0 = as
 * expected, anything else names the first check that failed). The
 * same probes run without the filter first, so a refusal can only come
 * from the filter and not from the environment.
 */

#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "proc.h"
#include "sandbox.h"

enum {
	SB_OK = 0,
	SB_SANDBOX,		/* sandbox_worker() failed */
	SB_INET_ALLOWED,		/* socket(AF_INET) did not fail */
	SB_INET_ERRNO,		/* ... failed, but not with EPERM */
	SB_INET6_ALLOWED,
	SB_INET6_ERRNO,
	SB_NETLINK_ALLOWED,
	SB_UNIX_STREAM,		/* socket(AF_UNIX, SOCK_STREAM) failed */
	SB_UNIX_DGRAM,
	SB_SOCKETPAIR,
	SB_NNP,			/* PR_GET_NO_NEW_PRIVS != 1 */
	SB_STATUS,		/* /proc/self/status lacks Seccomp:\t2 */
	SB_VMREAD_ALLOWED,	/* process_vm_readv was not refused */
	SB_VMREAD_ERRNO,
	SB_UNFILTERED,		/* baseline: probe failed without a filter */
};

/* Runs fn in a child; returns its exit code, or 100 + signal. */
static int
in_child(int (*fn)(void))
{
	pid_t	pid;
	int	status;

	pid = fork();
	assert_true(pid != -1);
	if (pid == 0)
		_exit(fn());
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status))
		return 100 + WTERMSIG(status);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/* 0 if socket(family, type) fails with EPERM, 1 if it works, 2 other. */
static int
probe_socket(int family, int type)
{
	int fd;

	errno = 0;
	if ((fd = socket(family, type, 0)) != -1) {
		close(fd);
		return 1;
	}
	return errno == EPERM ? 0 : 2;
}

static int
status_has(const char *line)
{
	char	 buf[8192];
	FILE	*f;
	size_t	 n;

	if ((f = fopen("/proc/self/status", "r")) == NULL)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, line) != NULL;
}

/* 0 refused with EPERM, 1 worked, 2 other error. */
static int
probe_vm_readv(void)
{
	char		src[16] = "licproxy", dst[16];
	struct iovec	local = { dst, sizeof(dst) }, remote = { src, sizeof(src) };

	errno = 0;
	if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) ==
	    (ssize_t)sizeof(src))
		return 1;
	return errno == EPERM ? 0 : 2;
}

static int
child_unfiltered(void)
{
	if (probe_socket(AF_INET, SOCK_STREAM) != 1 ||
	    probe_socket(AF_INET6, SOCK_DGRAM) != 1 ||
	    probe_socket(AF_UNIX, SOCK_STREAM) != 1)
		return SB_UNFILTERED;
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 0)
		return SB_UNFILTERED;
	if (status_has("Seccomp:\t2"))
		return SB_UNFILTERED;
	if (probe_vm_readv() != 1)
		return SB_UNFILTERED;
	return SB_OK;
}

static int
child_sockets(void)
{
	int sv[2];

	if (sandbox_worker() == -1)
		return SB_SANDBOX;
	switch (probe_socket(AF_INET, SOCK_STREAM)) {
	case 1: return SB_INET_ALLOWED;
	case 2: return SB_INET_ERRNO;
	}
	switch (probe_socket(AF_INET6, SOCK_DGRAM)) {
	case 1: return SB_INET6_ALLOWED;
	case 2: return SB_INET6_ERRNO;
	}
	if (probe_socket(AF_NETLINK, SOCK_RAW) != 0)
		return SB_NETLINK_ALLOWED;
	if (probe_socket(AF_UNIX, SOCK_STREAM) != 1)
		return SB_UNIX_STREAM;
	if (probe_socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC) != 1)
		return SB_UNIX_DGRAM;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		return SB_SOCKETPAIR;
	close(sv[0]);
	close(sv[1]);
	return SB_OK;
}

static int
child_state(void)
{
	if (sandbox_worker() == -1)
		return SB_SANDBOX;
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		return SB_NNP;
	if (!status_has("Seccomp:\t2"))
		return SB_STATUS;
	return SB_OK;
}

static int
child_denied_syscalls(void)
{
	if (sandbox_worker() == -1)
		return SB_SANDBOX;
	switch (probe_vm_readv()) {
	case 1: return SB_VMREAD_ALLOWED;
	case 2: return SB_VMREAD_ERRNO;
	}
	return SB_OK;
}

static void
test_baseline_unfiltered(void **state)
{
	(void)state;
	assert_int_equal(in_child(child_unfiltered), SB_OK);
}

static void
test_inet_socket_refused_unix_allowed(void **state)
{
	(void)state;
	assert_int_equal(in_child(child_sockets), SB_OK);
	/* The filter stays with the child: the parent still has INET. */
	assert_int_equal(probe_socket(AF_INET, SOCK_STREAM), 1);
}

static void
test_no_new_privs_and_filter_mode(void **state)
{
	(void)state;
	assert_int_equal(in_child(child_state), SB_OK);
	assert_false(status_has("Seccomp:\t2"));
}

static void
test_denied_syscalls(void **state)
{
	(void)state;
	assert_int_equal(in_child(child_denied_syscalls), SB_OK);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_baseline_unfiltered),
		cmocka_unit_test(test_inet_socket_refused_unix_allowed),
		cmocka_unit_test(test_no_new_privs_and_filter_mode),
		cmocka_unit_test(test_denied_syscalls),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
