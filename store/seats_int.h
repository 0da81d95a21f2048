/*
 * seats_int.h - what store/seats.c borrows from store.c: its transaction
 * helpers and the handles of the seat tables. Not for use outside store/.
 */
#ifndef SEATS_INT_H
#define SEATS_INT_H

#include <lmdb.h>

struct store;

enum store_seats_db { SEATS_DB_SEATS, SEATS_DB_GRANTS, SEATS_DB_MYGRANTS };

int	store_begin(struct store *, int write, MDB_txn **);
int	store_commit(MDB_txn *, const char *what);
int	store_err(int rc, const char *what);
/* -1 when the table is absent (a read-only open of an older store). */
int	store_seats_dbi(struct store *, enum store_seats_db, MDB_dbi *);

#endif
