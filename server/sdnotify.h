/* sdnotify.h - systemd readiness notification (no libsystemd needed). */
#ifndef SDNOTIFY_H
#define SDNOTIFY_H
void	sdnotify(const char *state);	/* "READY=1", "RELOADING=1", ... */
#endif
