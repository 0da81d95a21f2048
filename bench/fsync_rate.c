/*
 * fsync_rate.c - raw durable-write rate of a file system: a loop of
 * pwrite(4 KiB) + fdatasync on a preallocated file, for N seconds.
 * This is the ceiling for any design that makes one commit per fsync;
 * licproxy's usage POSTs/s divided by this number is its group-commit
 * factor. Usage: fsync_rate DIR [SECONDS]  -> prints "<syncs/s> <count> <secs>"
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PAGE	4096
#define PAGES	256	/* 1 MiB, rewritten in place like LMDB pages */

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
	char		path[4096], buf[PAGE];
	double		secs = argc > 2 ? atof(argv[2]) : 3.0, t0, t;
	long		n = 0;
	int		fd, i;

	if (argc < 2) {
		fprintf(stderr, "usage: fsync_rate DIR [SECONDS]\n");
		return 2;
	}
	snprintf(path, sizeof(path), "%s/fsync_rate.%ld", argv[1], (long)getpid());
	if ((fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600)) == -1) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return 1;
	}
	memset(buf, 'x', sizeof(buf));
	/* Allocate and sync the blocks first so the loop measures data
	 * flushes, not block allocation (LMDB's map is reused the same way). */
	for (i = 0; i < PAGES; i++)
		if (pwrite(fd, buf, PAGE, (off_t)i * PAGE) != PAGE)
			goto fail;
	if (fsync(fd) == -1)
		goto fail;
	t0 = now();
	do {
		buf[0] = (char)n;
		if (pwrite(fd, buf, PAGE, (off_t)(n % PAGES) * PAGE) != PAGE ||
		    fdatasync(fd) == -1)
			goto fail;
		n++;
	} while ((t = now()) - t0 < secs);
	close(fd);
	unlink(path);
	printf("%.1f %ld %.3f\n", n / (t - t0), n, t - t0);
	return 0;
fail:
	fprintf(stderr, "%s: %s\n", path, strerror(errno));
	unlink(path);
	return 1;
}
