/*
 * usage_rec.h - one usage record as a worker validates it, the store keeps
 * it and the relay forwards it, and the ledger's totals. Its own header so
 * that code needing the record does not take in the whole store API.
 */
#ifndef USAGE_REC_H
#define USAGE_REC_H

#include <stdint.h>

#include "token.h"

#define USAGE_ID_MAX	64	/* a record id: 1-64 characters */
#define USAGE_TS_FIELD	40	/* ts buffer: an RFC 3339 time as received */

struct usage_rec {
	char		 kid[TOKEN_KID_LEN + 1];
	char		 id[USAGE_ID_MAX + 1];
	char		 product[TOKEN_PRODUCT_MAX + 1];
	char		 metric[TOKEN_PRODUCT_MAX + 1];	/* same rule */
	double		 quantity;
	char		 ts[USAGE_TS_FIELD];
};

/* Ledger totals per (kid, product, metric). */
struct usage_total {
	char		 kid[TOKEN_KID_LEN + 1];
	char		 product[TOKEN_PRODUCT_MAX + 1];
	char		 metric[TOKEN_PRODUCT_MAX + 1];
	double		 quantity;
	uint64_t	 records;
};

#endif
