/* The room registry: room -> members and member -> rooms.
 *
 * Both indexes are kept in step, so a member can leave all its rooms in
 * O(rooms) and a room lists its members in O(members). Removal from either
 * side is O(1) (swap with the last slot; each side remembers its position in
 * the other). Empty rooms are deleted at once. This module never calls Lua
 * and knows nothing about sockets: the owner pointer is opaque. */
#ifndef MR_ROOMS_H
#define MR_ROOMS_H

#include <stddef.h>
#include <stdint.h>

#include <uthash.h>

struct mr_room;

typedef struct {
  struct mr_room *room;
  uint32_t slot; /* index of this member in room->members */
} mr_room_link;

/* Embedded in whatever joins rooms (a connection), which finds itself from
 * it by its offset (no owner pointer: 8 bytes a connection). Most members
 * are in one room, so the first link lives inline: a heap array of links
 * (80 bytes with malloc's overhead) is made only for a second room. A
 * zeroed member is valid and in no room. */
typedef struct mr_member {
  uint32_t nlinks, cap;
  union {
    mr_room_link one;   /* while cap <= 1 */
    mr_room_link *many; /* once cap > 1: a heap array of cap links */
  } links;
} mr_member;

/* The member's links, nlinks of them (inline or on the heap). */
static inline mr_room_link *mr_member_links(mr_member *m) {
  return m->cap > 1 ? m->links.many : &m->links.one;
}
static inline const mr_room_link *mr_member_links_const(const mr_member *m) {
  return m->cap > 1 ? m->links.many : &m->links.one;
}

typedef struct {
  mr_member *member;
  uint32_t link; /* index of this room in member->links */
} mr_room_slot;

typedef struct mr_room {
  char *name; /* NUL-terminated copy; name_len excludes the NUL */
  size_t name_len;
  mr_room_slot *members;
  uint32_t count, cap;
  UT_hash_handle hh;
} mr_room;

/* Called when a room gets its first member or loses its last one; the
 * cluster uses it to announce interest. The room is still valid during the
 * call in both cases. */
typedef void (*mr_room_cb)(void *ud, const mr_room *room, int created);

/* Called after every join and leave with the room's new count (0 when
 * the room is about to be deleted; it is still valid during the call).
 * Optional: set it after mr_rooms_init; it shares ud with on_change. */
typedef void (*mr_room_count_cb)(void *ud, const mr_room *room);

typedef struct {
  mr_room *by_name;
  size_t nrooms;
  mr_room_cb on_change;
  void *ud;
  mr_room_count_cb on_count;
} mr_rooms;

void mr_rooms_init(mr_rooms *r, mr_room_cb on_change, void *ud);
/* Frees every room; members must have left (or be discarded) first. */
void mr_rooms_free(mr_rooms *r);

/* Adds m to the room, creating it. Returns 1 when joined, 0 when m was
 * already a member (join is idempotent), MR_ENOMEM on allocation failure. */
int mr_rooms_join(mr_rooms *r, mr_member *m, const char *name, size_t len);

/* Removes m from the room, deleting the room if it becomes empty. Returns 1
 * when m was a member, 0 when it was not. */
int mr_rooms_leave(mr_rooms *r, mr_member *m, const char *name, size_t len);

/* Removes m from every room and frees its link array (m is then as a
 * zeroed member). */
void mr_rooms_leave_all(mr_rooms *r, mr_member *m);

/* Finds a room by name; NULL when no member is in it. */
mr_room *mr_rooms_find(const mr_rooms *r, const char *name, size_t len);

/* Iteration over a room's members, for fan-out and listings. The caller
 * must not join or leave this room while iterating (the fan-out only dooms
 * connections, and leaves happen at the safe point), since a leave moves
 * the last member into the freed slot. */
typedef struct {
  const mr_room *room;
  uint32_t i;
} mr_room_iter;

static inline void mr_room_iter_init(mr_room_iter *it, const mr_room *room) {
  it->room = room;
  it->i = 0;
}

/* The next member, or NULL at the end (and for a NULL room). */
static inline mr_member *mr_room_iter_next(mr_room_iter *it) {
  if (!it->room || it->i >= it->room->count)
    return NULL;
  return it->room->members[it->i++].member;
}

/* Every room of the registry, in no particular order: the first, then the
 * next of each; NULL at the end. The same rule as above applies. */
static inline mr_room *mr_rooms_first(const mr_rooms *r) { return r->by_name; }
static inline mr_room *mr_rooms_next(const mr_room *room) {
  return room->hh.next;
}

/* The rooms a member is in: how many, and the i-th (0 <= i < count). */
static inline uint32_t mr_member_nrooms(const mr_member *m) {
  return m->nlinks;
}
static inline mr_room *mr_member_room(const mr_member *m, uint32_t i) {
  return mr_member_links_const(m)[i].room;
}

/* True when m is in the room. */
int mr_rooms_is_member(const mr_member *m, const mr_room *room);

#endif
