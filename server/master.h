/* master.h - the supervising process of `licproxy serve`. */
#ifndef MASTER_H
#define MASTER_H

struct conf;
struct conf_overrides;

/* Runs until TERM/INT; returns the exit code. Takes ownership of cf. */
int	master_main(struct conf *cf, const char *cfpath,
	    const struct conf_overrides *ov);

#endif
