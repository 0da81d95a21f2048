/* gauge.h - store figures for the stats block (uplink and issuer). */
#ifndef GAUGE_H
#define GAUGE_H

#include "store.h"

struct store_lease_counts gauge_store(struct store *, int authority);

#endif
