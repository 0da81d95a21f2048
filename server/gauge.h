/* gauge.h - store figures for the stats block (uplink and issuer). */
#ifndef GAUGE_H
#define GAUGE_H

#include "store.h"

/*
 * The lease count, kept by the one writer of leases (uplink or issuer) in
 * its process context. The table is walked a bounded slice per tick, so a
 * tick costs the same with one lease or a million; between full passes the
 * uplink reports each lease it adds or removes (the issuer does not: that
 * would cost a read per signature, so an authority's figure follows its
 * passes, one tick up to GAUGE_SLICE leases).
 */
struct gauge {
	int				 authority;
	int				 passes;	/* complete passes */
	int				 mid;		/* pos is valid */
	unsigned char			 pos[32];	/* last key counted */
	struct store_lease_counts	 acc;		/* this pass so far */
	struct store_lease_counts	 last;		/* last pass + changes */
};

void	gauge_init(struct gauge *, int authority);
/* The figures a process can publish at start without counting. */
void	gauge_start(struct gauge *, struct store *);
/* One slice of the count, and the figures into the stats block. */
void	gauge_tick(struct gauge *, struct store *);
/* A key without a valid lease got one (+1), or lost its valid one (-1). */
void	gauge_lease_changed(struct gauge *, const unsigned char sha[32],
	    int delta);
/* Valid leases as far as the gauge knows now. */
uint64_t gauge_valid(const struct gauge *);

#endif
