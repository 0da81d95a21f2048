/* chans.h - the uplink/issuer end of the workers' channels. */
#ifndef CHANS_H
#define CHANS_H

#include <stdint.h>

struct event_base;
struct ipc_msg;

/* Called per valid message; chan identifies the sender for chans_send. */
typedef void (*chans_msg_cb)(uint64_t chan, const struct ipc_msg *);

int	chans_init(struct event_base *, int listen_fd, chans_msg_cb);
/* Send to a channel; silently dropped if that worker is gone. */
void	chans_send(uint64_t chan, const struct ipc_msg *);
void	chans_stop_listening(void);	/* the others keep being served */
void	chans_close_all(void);

#endif
