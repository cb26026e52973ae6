/* The cluster: authenticated links to other moonroom nodes, a full mesh
 * grown from any seed, room interest, and forwarding of room broadcasts.
 * A broadcast received from a peer is delivered locally and never
 * forwarded again. */
#ifndef MR_CLUSTER_H
#define MR_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

struct mr_server;
struct mr_link;
typedef struct mr_cluster mr_cluster;

/* How the cluster hands a room broadcast from a peer to this node: deliver
 * it to local members only (ud is what mr_cluster_start was given). */
typedef int (*mr_cluster_deliver_cb)(void *ud, const char *room,
                                     size_t room_len, const void *msg,
                                     size_t len, int binary);

/* Starts the cluster from srv->cfg (listen and dial); broadcasts from peers
 * go to deliver. Returns 0 with the cluster in srv->cluster (the server
 * frees it with mr_cluster_free), or a negative error code after logging
 * why; a failed start leaves only a closing handle, which frees the
 * cluster once the loop runs its close callback. */
int mr_cluster_start(struct mr_server *srv, mr_cluster_deliver_cb deliver,
                     void *ud);

/* A local room got its first member (created=1) or lost its last. An
 * announcement that cannot be built (a room the wire cannot name, no
 * memory) is counted in internal_errors and logged. */
void mr_cluster_interest(mr_cluster *cl, const char *room, size_t len,
                         int created);

/* Forwards a room broadcast once to every linked node interested in room.
 * A broadcast that cannot be built, or whose room the wire cannot name
 * while a node is linked, is counted in internal_errors and logged. */
void mr_cluster_forward(mr_cluster *cl, const char *room, size_t room_len,
                        const void *msg, size_t len, int binary);

/* Closes every link and handle (for shutdown). */
void mr_cluster_close(mr_cluster *cl);

/* Frees the cluster after mr_cluster_close and the end of the loop. */
void mr_cluster_free(mr_cluster *cl);

/* The heartbeat at loop time now (milliseconds): every link past its
 * handshake deadline or silent too long is closed, every other
 * established link is pinged. A timer calls it every second; tests call
 * it with whatever time they need. */
void mr_cluster_tick(mr_cluster *cl, uint64_t now);

/* Creates a link to another node without a socket (link.h): what this node
 * sends waits in the link's queue (mr_link_take) and what the other node
 * sends is given to mr_link_feed, so that two clusters in one process can
 * be joined by pumping bytes between one virtual link of each. dialer
 * picks the side of the handshake: the dialer sends HELLO at once. Returns
 * NULL when out of memory; the caller owns the link until it calls
 * mr_link_release, even after the link has closed. */
struct mr_link *mr_cluster_link_virtual(mr_cluster *cl, int dialer);

/* This node's name. */
const char *mr_cluster_node(const mr_cluster *cl);

/* Fills names with up to max linked (authenticated) node names; returns how
 * many. The strings stay valid until the loop next runs. */
size_t mr_cluster_peers(const mr_cluster *cl, const char **names, size_t max);

/* Counts this node's links in each state: counts has MR_LINK_NSTATES
 * entries (link.h), indexed by mr_link_state. */
void mr_cluster_link_states(const mr_cluster *cl, size_t *counts);

#endif
