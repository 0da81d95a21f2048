/* issuer.h - authority mode's lease issuer (issuer.c). */
#ifndef ISSUER_H
#define ISSUER_H

struct proc_env;

/* The entry, after fork: never returns. */
void	issuer_main(struct proc_env *) __attribute__((noreturn));

#endif
