/* One cluster link: a byte stream to another node, cut into wire frames,
 * with its out-queue, its heartbeat and its handshake deadline.
 *
 * A link knows nothing of what the frames mean beyond keeping itself
 * alive: it splits the stream with mr_wire_next_frame, decodes each frame,
 * answers PING and drops the link on a malformed frame, and hands every
 * other frame to its owner. The owner (the cluster's membership logic)
 * runs the handshake, decides when the link is established and what room
 * traffic means. Everything the link has to report goes up through the
 * callbacks in mr_link_events, as libuv does, so this module never calls
 * into its owner by name.
 *
 * A link is written through the shared transport (transport.h), over TLS
 * when the server has a cluster TLS context (srv->cluster_tls): the dialer
 * is the TLS client, the acceptor the server, and each verifies the
 * other's certificate against the cluster CA before any frame (the
 * owner's cookie handshake included) is read or sealed. Its memory
 * is freed only in its libuv close callback; a virtual link (no socket,
 * for tests and the busted kit) is freed when its creator releases it. */
#ifndef MR_LINK_H
#define MR_LINK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "context.h"
#include "transport.h"
#include "wire.h"

/* Every link is checked (and pinged) this often. */
#define MR_LINK_HEARTBEAT_MS 1000
/* A link must finish its handshake within this many milliseconds of being
 * connected. */
#define MR_LINK_HANDSHAKE_MS 5000
/* An established link that has received nothing for this long is dead;
 * PINGs every tick keep a healthy one from ever getting there. */
#define MR_LINK_SILENT_MS 5000
/* A heartbeat that comes this long after the previous one finds a loop that
 * did not run in between (the process was stopped, starved or paused): it
 * judges no link, because what the peers sent meanwhile is still unread. */
#define MR_LINK_STALL_MS (2 * MR_LINK_HEARTBEAT_MS)

typedef enum {
  MR_LINK_CONNECTING, /* TCP connect in progress (a link we dial) */
  MR_LINK_HANDSHAKE,  /* connected; the owner's handshake runs */
  MR_LINK_UP,         /* established (mr_link_set_up); heartbeats run */
  MR_LINK_CLOSED      /* reported to the owner; memory freed soon */
} mr_link_state;

/* How many states there are, for arrays indexed by mr_link_state. */
#define MR_LINK_NSTATES 4

typedef struct mr_link mr_link;
typedef struct mr_link_env mr_link_env;

/* What a link reports to its owner. connected and frame may close the
 * link, or any other; closed must not close another link, because links
 * close while the heartbeat and mr_link_env_send_up walk the list. The
 * link's memory stays valid until the callback returns. */
typedef struct mr_link_events {
  /* A link we dialed is connected and in the handshake state. */
  void (*connected)(mr_link *l);
  /* One well-formed frame arrived. The link answers PING and ignores PONG
   * itself once established; every other frame comes here. m points into
   * the link's read buffer and is valid during the call only. */
  void (*frame)(mr_link *l, const mr_wire_msg *m);
  /* The link closed, once: was is the state it had, why a reason for the
   * log, and refused is 1 when the other side failed the handshake rather
   * than being lost. After this returns the owner must forget the link;
   * its per-link data (mr_link_data) goes with the link's memory. */
  void (*closed)(mr_link *l, mr_link_state was, const char *why, int refused);
} mr_link_events;

/* What every link of one owner shares: the server (for the loop and the
 * counters), the limits, the callbacks, the heartbeat timer, and the batch
 * of links with bytes to write, which a prepare hook flushes once per loop
 * iteration, before the loop polls (as the server does for connections). */
struct mr_link_env {
  void *data; /* the owner's, set after mr_link_env_init; links ignore it */
  mr_server *srv;
  const mr_link_events *events;
  size_t max_frame; /* largest payload accepted from a peer */
  size_t max_queue; /* unsent bytes a link may hold before it is dropped */
  size_t data_size; /* bytes of per-link owner data (mr_link_data) */
  mr_link *links;   /* every link that is not closed */
  mr_link *pending; /* links with queued, unflushed bytes */
  uv_prepare_t flush_prep;
  uv_timer_t heartbeat; /* mr_link_env_beat every MR_LINK_HEARTBEAT_MS */
  uint64_t last_beat;   /* loop time of the last mr_link_env_beat */
};

struct mr_link {
  uv_tcp_t tcp; /* unused by a virtual link */
  uv_connect_t creq;
  mr_link_env *env;
  mr_link *prev, *next;                   /* env->links */
  mr_link *pending_next, **pending_pprev; /* env->pending */
  mr_link_state state;
  int dialer;     /* we dialed (else the other node did) */
  int is_virtual; /* no socket: output waits in tx, input comes by feed */
  int held;       /* a virtual link its creator has not released */
  int pending;    /* on env->pending */
  /* For logs: the peer's node name once the owner knows it, and the
   * socket's address (or what a virtual link was told it is). */
  char name[MR_WIRE_MAX_NAME + 1];
  char remote[MR_WIRE_MAX_NAME + 1];
  uint8_t *rbuf; /* received bytes not yet cut into frames */
  size_t rlen, rcap;
  mr_tx tx;
  uint64_t deadline; /* loop time by which the handshake must be done */
  uint64_t last_rx;  /* loop time of the last frame from the peer */
  /* With --cluster-tls-*, l->tx.tls is the link's session (owned by tx);
   * tls_failed is set when the link closes for a failed TLS handshake
   * (counted in cluster_tls_failures; the reason is the close's why). */
  int tls_failed;
  /* The owner's per-link state, env->data_size bytes, zeroed at creation
   * and freed with the link, so the owner may still read it while a close
   * it caused unwinds. */
  max_align_t data[];
};

/* The owner's per-link state. */
static inline void *mr_link_data(mr_link *l) { return l->data; }

/* Prepares env (owned by the caller) for links that report to events and
 * carry data_size bytes of owner data each, and starts its flush hook and
 * heartbeat on srv's loop (which cannot fail). */
void mr_link_env_init(mr_link_env *env, mr_server *srv,
                      const mr_link_events *events, size_t max_frame,
                      size_t max_queue, size_t data_size);

/* Closes every link of env ("shutting down", reported as usual), its
 * flush hook and its heartbeat. The caller frees env only after the loop
 * has run the close callbacks. */
void mr_link_env_close(mr_link_env *env);

/* The heartbeat of every link at loop time now (mr_link_tick); the timer
 * calls it with the loop's time, tests with the time they need. */
void mr_link_env_tick(mr_link_env *env, uint64_t now);

/* The heartbeat timer's step at loop time now. Normally mr_link_env_tick;
 * but when now is MR_LINK_STALL_MS or more past the previous beat, this
 * node itself did not run meanwhile, and libuv runs timers before it reads
 * sockets: the peers' frames of the whole stall still wait unread. Such a
 * beat only pings (counted in cluster_stalls, logged) and judges nothing,
 * so silence is measured from the time this node could read again: the
 * next beat, one heartbeat later, judges with the waiting frames read. */
void mr_link_env_beat(mr_link_env *env, uint64_t now);

/* The established link to the node named name, other than except (may be
 * NULL); NULL when there is none. */
mr_link *mr_link_env_find_up(const mr_link_env *env, const char *name,
                             const mr_link *except);

/* Fills names with the names of up to max established links; returns how
 * many. The strings live as long as their links. */
size_t mr_link_env_names(const mr_link_env *env, const char **names,
                         size_t max);

/* Counts the links of env in each state: counts[MR_LINK_CONNECTING] and so
 * on, indexed by mr_link_state (closed links have left the list, so that
 * one is 0). */
void mr_link_env_count_states(const mr_link_env *env,
                              size_t counts[MR_LINK_NSTATES]);

/* Queues a shared frame on every established link (mr_link_send). */
void mr_link_env_send_up(mr_link_env *env, mr_buf *frame);

/* Accepts a connection from listener as a link in the handshake state,
 * already reading. Returns 0 with *out set, or a negative error code, in
 * which case nothing is reported and nothing is left to free. */
int mr_link_accept(mr_link_env *env, uv_stream_t *listener, mr_link **out);

/* Starts dialing addr; remote names it in logs. Returns 0 with *out set
 * (the connected or closed callback follows), or a negative error code, in
 * which case no callback is ever called and nothing is left to free. */
int mr_link_dial(mr_link_env *env, const struct sockaddr *addr,
                 const char *remote, mr_link **out);

/* Creates a link without a socket, in the handshake state: what it sends
 * waits in its queue (mr_link_take) and what it receives is given to
 * mr_link_feed. dialer says which side of the handshake it plays; remote
 * names it in logs. Returns NULL when out of memory. The creator owns the
 * link until it calls mr_link_release, even after the link has closed. */
mr_link *mr_link_new_virtual(mr_link_env *env, int dialer, const char *remote);

/* Feeds bytes to a virtual link as if they came from its socket. Bytes fed
 * to a closed link are ignored. The caller keeps owning bytes. */
void mr_link_feed(mr_link *l, const void *bytes, size_t len);

/* Moves up to cap queued bytes of a virtual link into out, as a socket
 * that wrote them would; returns how many. */
size_t mr_link_take(mr_link *l, void *out, size_t cap);

/* The creator of a virtual link lets go of it: an open link is closed
 * ("released"), and the memory is freed. */
void mr_link_release(mr_link *l);

/* Queues a frame shared with other links; the link takes its own
 * reference and the caller keeps its own. A link whose queue would pass
 * env->max_queue is dropped instead (counted in cluster_queue_drops), so
 * a peer that does not read cannot grow this node's memory without bound.
 * Returns 0, or a negative error code when the link is (now) closed. */
int mr_link_send(mr_link *l, mr_buf *frame);

/* Copies the frames encoded in w into a block that links can share.
 * Returns NULL when out of memory; the caller owns the block. */
mr_buf *mr_link_frame(const mr_wbuf *w);

/* Queues a copy of what an encoder left in w, given the encoder's result
 * (encoded): a failed encoding closes the link instead, with the error as
 * the reason. Takes w: its memory is freed either way. Returns 0, or a
 * negative error code when the link is (now) closed. */
int mr_link_send_encoded(mr_link *l, mr_wbuf *w, int encoded);

/* Sets the peer's node name used in logs (len bytes, cut to fit). */
void mr_link_set_name(mr_link *l, const char *name, size_t len);

/* The owner's handshake succeeded: the deadline no longer applies and the
 * heartbeat does. */
void mr_link_set_up(mr_link *l);

/* Closes the link and reports it (once) through the closed callback; why
 * is copied by whoever keeps it. Safe to call on a closed link. */
void mr_link_close(mr_link *l, const char *why, int refused);

/* The heartbeat for one link at loop time now (milliseconds): a handshake
 * past its deadline is refused, an established link silent for
 * MR_LINK_SILENT_MS is closed, and any other established link is sent a
 * PING. A link that is still connecting is left alone. */
void mr_link_tick(mr_link *l, uint64_t now);

#endif
