/* child.h - steps more than one child takes for itself after fork. */
#ifndef CHILD_H
#define CHILD_H

struct conf;
struct store;

/*
 * Open the store as the (already dropped) server.user, so a fresh store's
 * files belong to that user; logs why and exits 1 if it cannot be used.
 */
struct store	*child_open_store(const struct conf *);
/*
 * serve's store check before any child starts, in a short-lived child of
 * its own: named licproxy-probe, drops privileges and opens the store as
 * the children will, then reads the first and the last record of every db
 * (store_check: both edges of each tree, a cost independent of the
 * store's size, so a million leases start as fast as one). Logs why and exits
 * 1 if the store cannot be used, 2 if the drop fails, else exits 0.
 */
void		 child_probe_main(const struct conf *)
		    __attribute__((noreturn));

#endif
