/* Room broadcasts: a message encoded once into one frame, shared by every
 * local member's queue, and forwarded once to the cluster.
 *
 * Nothing here runs Lua or frees a connection: a member that goes over its
 * backpressure limit mid-fan-out is only doomed, and closed at the next
 * safe point, so the member array cannot change under the loop. */
#ifndef MR_BROADCAST_H
#define MR_BROADCAST_H

#include <stddef.h>

#include "context.h"

/* Sends msg to every open local member of room except `except` (may be
 * NULL). Returns the number of members it was queued for, or MR_ENOMEM. */
int mr_broadcast_local(mr_server *srv, const char *room, size_t room_len,
                       const void *msg, size_t len, int binary,
                       struct mr_conn *except);

/* What this node's scripts broadcast: local delivery, then forwarding once
 * to the cluster. Returns what mr_broadcast_local returns. */
int mr_broadcast(mr_server *srv, const char *room, size_t room_len,
                 const void *msg, size_t len, int binary,
                 struct mr_conn *except);

/* A room broadcast that a peer node forwarded: delivered to local members
 * only and never forwarded again (what keeps a cluster free of storms).
 * The signature is the cluster's delivery callback (cluster.h); returns
 * what mr_broadcast_local returns, and logs and counts a failure. */
int mr_broadcast_remote(void *srv, const char *room, size_t room_len,
                        const void *msg, size_t len, int binary);

#endif
