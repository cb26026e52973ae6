/* The Redis engine: rooms across nodes through one Redis server instead of
 * the mesh (--engine redis://...), on hiredis's async API and its libuv
 * adapter, on the server's own loop.
 *
 * Two connections: one in pub/sub mode that subscribes to the channel of
 * every room with local members and to PREFIX:presence, one for PUBLISH
 * and the node key. A broadcast is delivered locally and published once
 * (redis_proto.h's envelope carries the origin, so the origin drops its
 * own copy); a message from another node is delivered to local members
 * only. Presence uses presence.c with this engine as its sender: batches
 * and full states are published on PREFIX:presence, the full state is
 * also kept under PREFIX:node:NAME with a TTL and refreshed; a node not
 * heard from for MR_ENGINE_TTL_MS is dropped like a node whose last link
 * closed.
 *
 * Failure: the connections are redialed with jittered exponential backoff
 * (MR_ENGINE_BACKOFF_MIN_MS to MR_ENGINE_BACKOFF_MAX_MS); on reconnect
 * every room with local members is subscribed again and this node's
 * presence published again. While Redis is unreachable, or holds more than
 * the queue limit unsent, cross-node broadcasts are dropped and counted
 * (engine_dropped), never buffered. No call blocks the loop after start. */
#ifndef MR_ENGINE_REDIS_H
#define MR_ENGINE_REDIS_H

#include <stddef.h>
#include <stdint.h>

struct mr_server;
typedef struct mr_engine mr_engine;

/* A node's key lives this long unless refreshed; a node silent this long
 * is dropped. */
#define MR_ENGINE_TTL_MS 15000u
/* How often the node key is refreshed and a heartbeat published. */
#define MR_ENGINE_REFRESH_MS 5000u
/* A dial not answered (connected, authenticated, PING answered) within
 * this is given up and redialed. */
#define MR_ENGINE_CONNECT_MS 5000u
#define MR_ENGINE_BACKOFF_MIN_MS 100u
#define MR_ENGINE_BACKOFF_MAX_MS 5000u
/* The bytes hiredis may hold unsent on the publishing connection before
 * broadcasts are dropped: this, or 4 x the largest message if larger. */
#define MR_ENGINE_MAX_QUEUE (64u << 20)

/* How the engine hands a broadcast from another node to this one: deliver
 * it to local members only. */
typedef int (*mr_engine_deliver_cb)(void *ud, const char *room, size_t room_len,
                                    const void *msg, size_t len, int binary);

/* Checks Redis once, synchronously, with a 2 s timeout (a refused password,
 * a missing one or a bad DB is an error; an unreachable Redis is only a
 * warning: the engine keeps dialing), then starts the engine on srv's
 * loop. Returns 0 with the engine in srv->engine (the server frees it with
 * mr_engine_free after mr_engine_close), or a negative error code after
 * logging why. */
int mr_engine_start(struct mr_server *srv, mr_engine_deliver_cb deliver,
                    void *ud);

/* A local room got its first member (created=1) or lost its last:
 * subscribe to or unsubscribe from its channel. */
void mr_engine_interest(mr_engine *e, const char *room, size_t len,
                        int created);

/* Publishes a room broadcast once; dropped and counted (engine_dropped)
 * while Redis is unreachable or over the queue limit. */
void mr_engine_forward(mr_engine *e, const char *room, size_t room_len,
                       const void *msg, size_t len, int binary);

/* Fills names with up to max names of the other nodes heard from within
 * MR_ENGINE_TTL_MS; returns how many. The strings stay valid until the
 * loop next runs. */
size_t mr_engine_peers(const mr_engine *e, const char **names, size_t max);

/* 1 while both connections to Redis are up. */
int mr_engine_connected(const mr_engine *e);

/* Says goodbye (BYE, the node key deleted) when connected, and closes the
 * connections and timers; the connections get up to 1 s to flush. */
void mr_engine_close(mr_engine *e);

/* Frees the engine after mr_engine_close and the end of the loop. */
void mr_engine_free(mr_engine *e);

#endif
