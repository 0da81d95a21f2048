/*
 * Opening the files the daemon reads at start and on reload.
 *
 * A plain open(2) of a FIFO blocks until something writes to it, so a
 * config or key path that names one (by mistake or by a hostile local
 * user) would hang start-up or a reload with no message. Opening
 * non-blocking returns at once; the caller then sees what the file is
 * in the stat and refuses anything that is not a regular file.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "file.h"

/*
 * Opens path read-only without waiting on FIFOs or devices and fills st.
 * Returns the descriptor (blocking again, close-on-exec) or -1 with errno
 * set; the caller checks S_ISREG(st->st_mode).
 */
int
file_open(const char *path, struct stat *st)
{
	int	fd, fl, saved;

	if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) == -1)
		return -1;
	if (fstat(fd, st) == -1 || (fl = fcntl(fd, F_GETFL)) == -1 ||
	    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}
