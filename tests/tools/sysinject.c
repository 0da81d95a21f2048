/*
 * sysinject.c - makes a running process call ONE system call, for the
 * integration tests (test_sandbox_roles, test_hostile_ipc): the call is
 * made by the target's own thread, so it meets the target's own seccomp
 * filter, as a compromised process would.
 *
 * usage: sysinject PID NR [ARG...]
 *   NR and each ARG (at most 6) an integer (decimal, 0x hex, 0 octal,
 *   negative allowed) or s:TEXT, a NUL-terminated string with C escapes
 *   (\xff, \377, \n, ...) copied into the target's memory below its stack
 *   pointer (rsp - 8192 and up, far beyond the 128-byte red zone) and
 *   passed as its address; the original bytes are put back afterwards.
 * Prints "RV ERRNO": "-1 1" for -EPERM, "3 0" for a success returning 3.
 * Exit 0 when the call was made (whatever it returned), 2 on a usage
 * error or any ptrace failure, the target's death included.
 *
 * How (x86_64 only, general-purpose registers only: PTRACE_GETREGS and
 * PTRACE_SETREGS, never the xstate regset, which gdb 13 cannot write back
 * on a CPU with AMX): PTRACE_SEIZE + PTRACE_INTERRUPT; save the registers;
 * point rip at a `syscall` instruction (0f 05) with rax = NR and the
 * arguments in rdi, rsi, rdx, r10, r8, r9; PTRACE_SINGLESTEP over it; read
 * rax; put the registers and the memory back; PTRACE_DETACH. Needs
 * CAP_SYS_PTRACE (root) since the targets are not dumpable.
 */
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/user.h>
#include <sys/wait.h>

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef __x86_64__
#error "sysinject: x86_64 only (the registers and the syscall instruction)"
#endif

#define MAXARGS		6
#define SCRATCH_BELOW	8192	/* strings go at rsp - this, aligned down */
#define SCRATCH_MAX	4096	/* so they end >= 4 KiB below rsp */
#define MAXSIGS		16	/* signals held back during the injection */
#define TIMEOUT		20	/* seconds, for the whole injection */

static pid_t	target;
static int	attached;
/* set once the target's registers/memory differ from what it had */
static int			regs_saved, mem_poked;
static struct user_regs_struct	saved;
static unsigned long		scratch;	/* target address, 8-aligned */
static unsigned long		orig_words[SCRATCH_MAX / 8];
static size_t			nwords;

static void	restore(void);

static void
die(const char *fmt, ...)
{
	va_list	ap;

	fputs("sysinject: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	restore();
	exit(2);
}

static void
usage(void)
{
	fprintf(stderr, "usage: sysinject PID NR [ARG...]  (at most %d ARGs;"
	    " an ARG is an integer or s:TEXT)\n", MAXARGS);
	exit(2);
}

/* Best effort on the way out of a failure: the target gets back its own
 * memory and registers (if it is still in a ptrace-stop), then is let go. */
static void
restore(void)
{
	size_t	i;

	if (!attached)
		return;
	attached = 0;
	if (mem_poked)
		for (i = 0; i < nwords; i++)
			ptrace(PTRACE_POKEDATA, target,
			    (void *)(scratch + 8 * i), (void *)orig_words[i]);
	if (regs_saved)
		ptrace(PTRACE_SETREGS, target, NULL, &saved);
	ptrace(PTRACE_DETACH, target, NULL, NULL);
}

static void
on_alarm(int sig)
{
	static const char msg[] = "sysinject: timed out\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(2);
	/* only ptrace calls: if the target is in a ptrace-stop it gets its
	 * own registers and memory back; exiting detaches it anyway */
	restore();
	_exit(2);
}

static long
parse_int(const char *s, const char *what)
{
	char	*end;
	long	v;

	errno = 0;
	if (*s == '-')
		v = strtol(s, &end, 0);
	else
		v = (long)strtoul(s, &end, 0);
	if (*s == '\0' || *end != '\0' || errno != 0) {
		fprintf(stderr, "sysinject: %s: not an integer: '%s'\n", what, s);
		usage();
	}
	return v;
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* s (after "s:") with its C escapes decoded into out, NUL added; the
 * length with the NUL. */
static size_t
unescape(const char *s, unsigned char *out, size_t cap)
{
	size_t	n = 0;
	int	c, i, v;

	while (*s != '\0') {
		if (n + 1 >= cap)
			die("strings longer than %d bytes in all", SCRATCH_MAX);
		if (*s != '\\') {
			out[n++] = (unsigned char)*s++;
			continue;
		}
		s++;
		switch ((c = *s++)) {
		case 'n': out[n++] = '\n'; break;
		case 't': out[n++] = '\t'; break;
		case 'r': out[n++] = '\r'; break;
		case 'a': out[n++] = '\a'; break;
		case 'b': out[n++] = '\b'; break;
		case 'f': out[n++] = '\f'; break;
		case 'v': out[n++] = '\v'; break;
		case 'e': out[n++] = 0x1b; break;
		case '\\': case '\'': case '"': case '?':
			out[n++] = (unsigned char)c;
			break;
		case 'x':
			if (hexval(*s) < 0)
				die("\\x without hex digits in a string");
			for (v = 0, i = 0; i < 2 && hexval(*s) >= 0; i++)
				v = v * 16 + hexval(*s++);
			out[n++] = (unsigned char)v;
			break;
		case '0': case '1': case '2': case '3':
		case '4': case '5': case '6': case '7':
			v = c - '0';
			for (i = 1; i < 3 && *s >= '0' && *s <= '7'; i++)
				v = v * 8 + (*s++ - '0');
			if (v > 0xff)
				die("octal escape above \\377 in a string");
			out[n++] = (unsigned char)v;
			break;
		default:
			die("unknown escape \\%c in a string",
			    c ? c : '0');
		}
	}
	out[n++] = '\0';
	return n;
}

/* waitpid for the next stop of the target; its death is a failure. */
static int
wait_stop(void)
{
	int	st;

	for (;;) {
		if (waitpid(target, &st, __WALL) == -1) {
			if (errno == EINTR)
				continue;
			die("waitpid %d: %s", (int)target, strerror(errno));
		}
		if (WIFEXITED(st)) {
			attached = 0;
			die("pid %d exited with status %d", (int)target,
			    WEXITSTATUS(st));
		}
		if (WIFSIGNALED(st)) {
			attached = 0;
			die("pid %d died (killed by signal %d)", (int)target,
			    WTERMSIG(st));
		}
		if (WIFSTOPPED(st))
			return st;
	}
}

/*
 * A ptrace request failed: ESRCH once the target is gone (a SIGKILL while
 * it was stopped for us, the very thing some tests provoke); say how it
 * went, from its exit status, instead of the failed request.
 */
static void
ptrace_ok(long rc, const char *what)
{
	int err = errno;

	if (rc != -1)
		return;
	if (err == ESRCH)
		(void)wait_stop();	/* dies if it is gone */
	die("%s: %s", what, strerror(err));
}

static unsigned long
peek(unsigned long addr)
{
	long	w;

	errno = 0;
	w = ptrace(PTRACE_PEEKDATA, target, (void *)addr, NULL);
	if (w == -1 && errno != 0)
		die("PTRACE_PEEKDATA %#lx: %s", addr, strerror(errno));
	return (unsigned long)w;
}

static int
is_syscall_insn(unsigned long addr)
{
	long	w;

	errno = 0;
	w = ptrace(PTRACE_PEEKDATA, target, (void *)addr, NULL);
	if (w == -1 && errno != 0)
		return 0;
	return (w & 0xffff) == 0x050f;		/* 0f 05, little-endian */
}

/* A `syscall` instruction anywhere in the target's executable mappings
 * (the vDSO first: small, and it has some), for a thread stopped outside
 * a system call. Any two bytes 0f 05 do: only they get executed. */
static unsigned long
find_syscall_insn(void)
{
	char		path[64], line[512];
	unsigned long	lo, hi, a, w;
	char		perms[8];
	FILE		*f;
	int		pass;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)target);
	for (pass = 0; pass < 2; pass++) {
		if ((f = fopen(path, "r")) == NULL)
			die("%s: %s", path, strerror(errno));
		while (fgets(line, sizeof(line), f) != NULL) {
			if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 ||
			    perms[2] != 'x')
				continue;
			if ((strstr(line, "[vdso]") != NULL) != (pass == 0))
				continue;
			if (hi - lo > (16UL << 20))
				hi = lo + (16UL << 20);
			for (a = lo; a + 8 <= hi; a += 7) {
				errno = 0;
				w = (unsigned long)ptrace(PTRACE_PEEKDATA,
				    target, (void *)a, NULL);
				if (w == (unsigned long)-1 && errno != 0)
					break;
				/* 8 bytes read, 7 pairs checked; the step
				 * of 7 overlaps one byte */
				for (int k = 0; k < 7; k++)
					if (((w >> (8 * k)) & 0xffff) ==
					    0x050f) {
						fclose(f);
						return a + k;
					}
			}
		}
		fclose(f);
	}
	die("no syscall instruction found in pid %d", (int)target);
	return 0;
}

int
main(int argc, char **argv)
{
	static unsigned char	strbuf[SCRATCH_MAX];
	struct user_regs_struct	regs;
	unsigned long		args[MAXARGS] = { 0 };
	size_t			strlen_[MAXARGS] = { 0 }, stroff[MAXARGS];
	size_t			used = 0, i;
	siginfo_t		held[MAXSIGS];
	int			nheld = 0, nargs, st, sig;
	unsigned long		insn;
	long			nr, rv;

	if (argc < 3 || argc - 3 > MAXARGS)
		usage();
	target = (pid_t)parse_int(argv[1], "PID");
	if (target <= 0)
		usage();
	nr = parse_int(argv[2], "NR");
	nargs = argc - 3;
	for (i = 0; i < (size_t)nargs; i++) {
		const char *a = argv[3 + i];

		if (strncmp(a, "s:", 2) == 0) {
			stroff[i] = used;
			strlen_[i] = unescape(a + 2, strbuf + used,
			    sizeof(strbuf) - used);
			used += (strlen_[i] + 7) & ~(size_t)7;
		} else
			args[i] = (unsigned long)parse_int(a, "ARG");
	}

	signal(SIGALRM, on_alarm);
	alarm(TIMEOUT);

	if (ptrace(PTRACE_SEIZE, target, NULL, NULL) == -1)
		die("PTRACE_SEIZE %d: %s", (int)target, strerror(errno));
	attached = 1;
	if (ptrace(PTRACE_INTERRUPT, target, NULL, NULL) == -1)
		die("PTRACE_INTERRUPT %d: %s", (int)target, strerror(errno));
	/*
	 * The first stop: our PTRACE_EVENT_STOP, or a signal-delivery-stop
	 * if a signal came first. Both are in the kernel's get_signal(), on
	 * the way back to user space, so either will do; a signal is held
	 * back (and given back at the end) and the event stop still pending
	 * is met, and passed, in the single-step loop below.
	 */
	st = wait_stop();
	if ((st >> 16) == 0) {
		ptrace_ok(ptrace(PTRACE_GETSIGINFO, target, NULL, &held[0]),
		    "PTRACE_GETSIGINFO");
		nheld = 1;
	}
	ptrace_ok(ptrace(PTRACE_GETREGS, target, NULL, &saved),
	    "PTRACE_GETREGS");
	regs_saved = 1;

	/*
	 * A thread stopped in a system call (epoll_wait here, nearly always)
	 * has rip just past its `syscall` instruction: rip - 2.
	 */
	if (is_syscall_insn(saved.rip - 2))
		insn = saved.rip - 2;
	else
		insn = find_syscall_insn();

	/* the strings, below the stack pointer, the old words saved first */
	if (used > 0) {
		scratch = (saved.rsp - SCRATCH_BELOW) & ~15UL;
		nwords = used / 8;
		for (i = 0; i < nwords; i++)
			orig_words[i] = peek(scratch + 8 * i);
		mem_poked = 1;
		for (i = 0; i < nwords; i++) {
			unsigned long w;

			memcpy(&w, strbuf + 8 * i, 8);
			if (ptrace(PTRACE_POKEDATA, target,
			    (void *)(scratch + 8 * i), (void *)w) == -1)
				die("PTRACE_POKEDATA %#lx: %s",
				    scratch + 8 * i, strerror(errno));
		}
		for (i = 0; i < (size_t)nargs; i++)
			if (strlen_[i] > 0)
				args[i] = scratch + stroff[i];
	}

	/*
	 * The registers of the call. orig_rax = -1 tells the kernel that the
	 * thread is NOT in a system call: stopped in epoll_wait, it has
	 * orig_rax = 232 and rax = -EINTR or one of the -ERESTART* codes,
	 * and on resuming the kernel's signal code, seeing orig_rax >= 0 and
	 * a restart code in rax, would set rax = orig_rax and rip -= 2, i.e.
	 * restart the old call instead of ours. With -1 it leaves our rip
	 * and rax alone, and the single step executes exactly the `syscall`
	 * at insn with rax = nr. At the end the saved registers go back as
	 * they were, orig_rax and the restart code included, so the kernel
	 * then does with the interrupted call just what it would have done
	 * without us: epoll_wait returns EINTR (libevent loops), a restartable
	 * call restarts.
	 */
	regs = saved;
	regs.rip = insn;
	regs.rax = (unsigned long)nr;
	regs.orig_rax = (unsigned long)-1;
	regs.rdi = args[0];
	regs.rsi = args[1];
	regs.rdx = args[2];
	regs.r10 = args[3];
	regs.r8 = args[4];
	regs.r9 = args[5];
	ptrace_ok(ptrace(PTRACE_SETREGS, target, NULL, &regs),
	    "PTRACE_SETREGS");

	/*
	 * Step until the thread is past the instruction: a signal that
	 * arrives first, or our still pending PTRACE_EVENT_STOP, stops it
	 * again before it runs a single instruction (rip still at insn).
	 */
	for (;;) {
		ptrace_ok(ptrace(PTRACE_SINGLESTEP, target, NULL, NULL),
		    "PTRACE_SINGLESTEP");
		st = wait_stop();
		sig = WSTOPSIG(st);
		ptrace_ok(ptrace(PTRACE_GETREGS, target, NULL, &regs),
		    "PTRACE_GETREGS");
		/* (every stop of get_signal() comes before the thread is back
		 * in user space, so before the instruction: checked) */
		if (regs.rip != insn && !(sig == SIGTRAP && (st >> 16) == 0 &&
		    regs.rip == insn + 2))
			die("pid %d stopped at %#llx, not at the syscall at "
			    "%#lx nor just after it in a SIGTRAP (status %#x)",
			    (int)target, regs.rip, insn, st);
		if (regs.rip == insn + 2)
			break;
		if ((st >> 16) != 0)		/* the event stop */
			continue;
		/* a signal-delivery-stop: the signal is held back */
		if (nheld < MAXSIGS) {
			if (ptrace(PTRACE_GETSIGINFO, target, NULL,
			    &held[nheld]) == -1)
				die("PTRACE_GETSIGINFO: %s", strerror(errno));
			nheld++;
		}
	}
	rv = (long)regs.rax;

	/* back as it was, then let go; the single-step SIGTRAP is dropped */
	if (mem_poked)
		for (i = 0; i < nwords; i++)
			ptrace_ok(ptrace(PTRACE_POKEDATA, target,
			    (void *)(scratch + 8 * i), (void *)orig_words[i]),
			    "PTRACE_POKEDATA (restore)");
	mem_poked = 0;
	ptrace_ok(ptrace(PTRACE_SETREGS, target, NULL, &saved),
	    "PTRACE_SETREGS (restore)");
	regs_saved = 0;
	/*
	 * A signal held back goes with the detach, siginfo and all; should
	 * more than one have come in the few microseconds, the others are
	 * sent again by tgkill (their siginfo then says SI_TKILL from us).
	 */
	sig = 0;
	if (nheld > 0) {
		ptrace_ok(ptrace(PTRACE_SETSIGINFO, target, NULL, &held[0]),
		    "PTRACE_SETSIGINFO");
		sig = held[0].si_signo;
	}
	ptrace_ok(ptrace(PTRACE_DETACH, target, NULL, (void *)(long)sig),
	    "PTRACE_DETACH");
	attached = 0;
	for (int k = 1; k < nheld; k++)
		if (syscall(SYS_tgkill, target, target, held[k].si_signo) == -1)
			fprintf(stderr, "sysinject: tgkill %d: %s\n",
			    held[k].si_signo, strerror(errno));

	if (rv < 0 && rv >= -4095)
		printf("-1 %ld\n", -rv);
	else
		printf("%ld 0\n", rv);
	return fflush(stdout) == 0 ? 0 : 2;
}
