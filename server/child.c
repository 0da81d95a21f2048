/*
 * child.c - what the children (and the store probe) do for themselves once
 * they run as server.user: open the store, with a reason an operator can act
 * on when they cannot.
 */
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "child.h"
#include "conf.h"
#include "log.h"
#include "proc.h"
#include "store.h"

/*
 * LMDB would only say "Permission denied": name the user and what to give
 * it. access() checks the real ids, which are the dropped ones by now.
 */
static int
child_store_access(const char *dir, char *err, size_t errlen)
{
	static const char *const files[] = { "", "/data.mdb", "/lock.mdb" };
	struct passwd	*pw = getpwuid(geteuid());
	const char	*u = pw != NULL ? pw->pw_name : "?";
	char		 path[PATH_MAX];
	size_t		 i;

	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s%s", dir, files[i]) >=
		    sizeof(path))
			return 0;	/* store_open says it is too long */
		if (access(path, R_OK | W_OK | (i == 0 ? X_OK : 0)) == 0 ||
		    (errno != EACCES && errno != EPERM && errno != EROFS))
			continue;	/* absent, or for store_open to tell */
		snprintf(err, errlen, "store %s: user %s cannot read and write"
		    " %s%s (%s). Give %s the directory and its files (chown -R"
		    " %s %s; chmod -R u+rwX %s) and search access to every"
		    " directory above it", dir, u, dir, files[i],
		    strerror(errno), u, u, dir, dir);
		return -1;
	}
	return 0;
}

static struct store *
child_store(const struct conf *cf, char *err, size_t errlen)
{
	if (child_store_access(cf->store.path, err, errlen) == -1)
		return NULL;
	return store_open(cf->store.path, cf->store.max_size, 0, err, errlen);
}

struct store *
child_open_store(const struct conf *cf)
{
	struct store	*st;
	char		 err[1024];

	if ((st = child_store(cf, err, sizeof(err))) == NULL) {
		log_errx("%s", err);
		exit(1);
	}
	return st;
}

/* Its whole life: name, drop, open and read, exit with the verdict. */
void
child_probe_main(const struct conf *cf)
{
	struct store	*st;
	char		 err[1024];

	proc_name("licproxy-probe");
	if (proc_drop_privs(cf->server.user) == -1)
		_exit(2);
	if ((st = child_store(cf, err, sizeof(err))) == NULL ||
	    store_check(st, cf->store.path, err, sizeof(err)) == -1) {
		log_errx("%s", err);
		_exit(1);
	}
	store_close(st);
	_exit(0);
}
