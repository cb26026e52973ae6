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

/* Embedded in whatever joins rooms (a connection). */
typedef struct mr_member {
  void *owner;
  mr_room_link *links;
  uint32_t nlinks, cap;
} mr_member;

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

typedef struct {
  mr_room *by_name;
  size_t nrooms;
  mr_room_cb on_change;
  void *ud;
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

/* Removes m from every room and frees its link array. */
void mr_rooms_leave_all(mr_rooms *r, mr_member *m);

/* Finds a room by name; NULL when no member is in it. */
mr_room *mr_rooms_find(const mr_rooms *r, const char *name, size_t len);

/* True when m is in the room. */
int mr_rooms_is_member(const mr_member *m, const mr_room *room);

#endif
