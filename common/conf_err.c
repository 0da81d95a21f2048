/*
 * conf_err.c - the load context's list of problems: each message carries
 * the file, line and column of the key or value at fault, and they are all
 * collected (not just the first) so that check-config shows an operator
 * every problem in one run. Also the helpers every step uses to report
 * into it: echoing user text safely, storing a string.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "conf.h"
#include "conf_int.h"

/*
 * Room kept at the end of err for conf_err_end's line: the list then ends
 * with a whole line saying how much is missing, never in mid-message.
 */
static size_t
conf_err_reserve(const struct cctx *c)
{
	return strlen(c->file) + 64;
}

static void
conf_errv(struct cctx *c, const struct cpos *p, const char *fmt, va_list ap)
{
	char	msg[1024];
	int	n;

	c->nerr++;
	if (c->err == NULL || c->errlen == 0)
		return;
	vsnprintf(msg, sizeof msg, fmt, ap);
	if (p != NULL && p->set)
		n = snprintf(NULL, 0, "%s%s:%lu:%lu: %s", c->off ? "\n" : "",
		    c->file, p->line, p->col, msg);
	else
		n = snprintf(NULL, 0, "%s%s: %s", c->off ? "\n" : "", c->file,
		    msg);
	/* Once one is left out, so are the rest: the list stays in order. */
	if (n < 0 || c->hidden > 0 ||
	    c->off + n + conf_err_reserve(c) >= c->errlen) {
		c->hidden++;
		return;
	}
	if (p != NULL && p->set)
		snprintf(c->err + c->off, c->errlen - c->off, "%s%s:%lu:%lu: %s",
		    c->off ? "\n" : "", c->file, p->line, p->col, msg);
	else
		snprintf(c->err + c->off, c->errlen - c->off, "%s%s: %s",
		    c->off ? "\n" : "", c->file, msg);
	c->off += n;
}

/* The last line of a list that did not fit: how many errors it leaves out. */
void
conf_err_end(struct cctx *c)
{
	if (c->hidden == 0 || c->err == NULL || c->off >= c->errlen)
		return;
	snprintf(c->err + c->off, c->errlen - c->off, "%s%s: %d more error%s "
	    "not shown", c->off ? "\n" : "", c->file, c->hidden,
	    c->hidden == 1 ? "" : "s");
}

void __attribute__((format(printf, 3, 4)))
conf_errp(struct cctx *c, const struct cpos *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	conf_errv(c, p, fmt, ap);
	va_end(ap);
}

struct cpos
conf_pos(const yaml_node_t *n)
{
	struct cpos p = { 0 };

	p.line = n->start_mark.line + 1;
	p.col = n->start_mark.column + 1;
	p.set = 1;
	return p;
}

void __attribute__((format(printf, 3, 4)))
conf_errn(struct cctx *c, const yaml_node_t *n, const char *fmt, ...)
{
	struct cpos	p = conf_pos(n);
	va_list		ap;

	va_start(ap, fmt);
	conf_errv(c, &p, fmt, ap);
	va_end(ap);
}

/*
 * Copy user text for echoing in a message: a control character would split
 * the one-error-per-line output, and a huge value would hide the others.
 */
const char *
conf_show(const char *s, char *buf, size_t len)
{
	size_t i;

	for (i = 0; s[i] != '\0' && i + 1 < len; i++)
		buf[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ?
		    '?' : s[i];
	buf[i] = '\0';
	if (s[i] != '\0' && len > 4)
		memcpy(buf + len - 4, "...", 4);
	return buf;
}

int
conf_setstr(struct cctx *c, char **dst, const char *s)
{
	char *d = NULL;

	if (s != NULL && (d = strdup(s)) == NULL) {
		conf_errp(c, NULL, "out of memory");
		return -1;
	}
	free(*dst);
	*dst = d;
	return 0;
}
